package tokenizer

import (
	"sync"
	"unicode/utf8"
)

// model is a BPE vocabulary and merge table, HF's models::bpe::BPE.
type model struct {
	vocab  map[string]int32
	merges map[uint64]merge // pairKey(left, right) -> rank and result
	unk    int32            // id of unk_token; -1: unknown characters are dropped
	// fuseUnk: consecutive unknown characters become one unk token.
	fuseUnk bool
	// byteFallback: an unknown character becomes its UTF-8 bytes' "<0xXX>"
	// tokens (byteIDs) when all of them exist.
	byteFallback bool
	byteIDs      [256]int32 // id of "<0x00>".."<0xFF>", -1 where absent
	// ignoreMerges: a piece that is itself in the vocabulary is one token,
	// whatever the merges would give (Llama-3).
	ignoreMerges bool
	prefix       string // continuing_subword_prefix, before non-first characters
	suffix       string // end_of_word_suffix, after the last character
	cache        wordCache
}

// merge is what a pair of adjacent tokens becomes: lower ranks merge first.
type merge struct{ rank, id int32 }

func pairKey(left, right int32) uint64 { return uint64(uint32(left))<<32 | uint64(uint32(right)) }

// tokenize appends the ids of one pre-tokenized piece.
func (m *model) tokenize(dst []int32, w string) []int32 {
	if w == "" {
		return dst
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[w]; ok {
			return append(dst, id)
		}
	}
	if ids, ok := m.cache.get(w); ok {
		return append(dst, ids...)
	}
	n := len(dst)
	dst = m.mergeWord(dst, w)
	if len(w) < cacheMaxWordBytes {
		m.cache.put(w, dst[n:])
	}
	return dst
}

// symbol is one token of a word during merging, in a linked list over the
// initial characters; merged symbols are absorbed into their left neighbour.
type symbol struct {
	id         int32
	prev, next int32 // -1 at the ends
	size       int32 // bytes of the word covered; 0 once absorbed
}

// mergeWord splits w into characters (or unk / byte-fallback tokens) and
// applies merges lowest rank first, leftmost first among equal ranks, exactly
// as HF's Word::merge_all does, then appends the resulting ids.
func (m *model) mergeWord(dst []int32, w string) []int32 {
	syms := make([]symbol, 0, len(w))
	add := func(id int32, size int) {
		n := int32(len(syms))
		if n > 0 {
			syms[n-1].next = n
		}
		syms = append(syms, symbol{id: id, prev: n - 1, next: -1, size: int32(size)})
	}
	unkID, unkSize := int32(-1), 0 // a pending unk token (fuse_unk grows it)
	for i := 0; i < len(w); {
		_, size := utf8.DecodeRuneInString(w[i:])
		s := w[i : i+size]
		if i > 0 && m.prefix != "" {
			s = m.prefix + s
		}
		if i+size == len(w) && m.suffix != "" {
			s += m.suffix
		}
		i += size

		if id, ok := m.vocab[s]; ok {
			if unkID >= 0 {
				add(unkID, unkSize)
				unkID = -1
			}
			add(id, size)
			continue
		}
		if m.byteFallback && m.hasBytes(s) {
			if unkID >= 0 { // HF would leave it for later; order it first
				add(unkID, unkSize)
				unkID = -1
			}
			for k := 0; k < len(s); k++ {
				add(m.byteIDs[s[k]], 1)
			}
			continue
		}
		if m.unk < 0 {
			continue // no unk token: the character is dropped, as in HF
		}
		switch {
		case unkID >= 0 && m.fuseUnk:
			unkSize += size
		case unkID >= 0:
			add(unkID, unkSize)
			unkSize = size
		default:
			unkID, unkSize = m.unk, size
		}
	}
	if unkID >= 0 {
		add(unkID, unkSize)
	}

	// Merge with a min-heap of candidate pairs ordered by (rank, position).
	var h mergeHeap
	for i := 0; i+1 < len(syms); i++ {
		if mg, ok := m.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
			h.push(mergeItem{pos: int32(i), rank: mg.rank, id: mg.id})
		}
	}
	for len(h) > 0 {
		top := h.pop()
		cur := &syms[top.pos]
		if cur.size == 0 || cur.next < 0 {
			continue // absorbed, or now last
		}
		right := syms[cur.next]
		// Skip stale entries: the pair at pos changed since it was pushed.
		if mg, ok := m.merges[pairKey(cur.id, right.id)]; !ok || mg.id != top.id {
			continue
		}
		cur.id = top.id
		cur.size += right.size
		syms[cur.next].size = 0
		cur.next = right.next
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if mg, ok := m.merges[pairKey(syms[cur.prev].id, cur.id)]; ok {
				h.push(mergeItem{pos: cur.prev, rank: mg.rank, id: mg.id})
			}
		}
		if cur.next >= 0 {
			if mg, ok := m.merges[pairKey(cur.id, syms[cur.next].id)]; ok {
				h.push(mergeItem{pos: top.pos, rank: mg.rank, id: mg.id})
			}
		}
	}
	for _, s := range syms {
		if s.size != 0 {
			dst = append(dst, s.id)
		}
	}
	return dst
}

// hasBytes reports whether every byte of s has a "<0xXX>" token.
func (m *model) hasBytes(s string) bool {
	for k := 0; k < len(s); k++ {
		if m.byteIDs[s[k]] < 0 {
			return false
		}
	}
	return true
}

// mergeItem is a candidate merge of the symbol at pos with its right
// neighbour.
type mergeItem struct{ pos, rank, id int32 }

// mergeHeap is a binary min-heap of mergeItems by (rank, pos).
type mergeHeap []mergeItem

func (a mergeItem) less(b mergeItem) bool {
	return a.rank < b.rank || a.rank == b.rank && a.pos < b.pos
}

func (h *mergeHeap) push(x mergeItem) {
	*h = append(*h, x)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].less(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *mergeHeap) pop() mergeItem {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && s[l].less(s[m]) {
			m = l
		}
		if r < n && s[r].less(s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

const (
	// cacheWords bounds the word cache (HF's DEFAULT_CACHE_CAPACITY); past
	// it, new words are not cached.
	cacheWords = 10000
	// cacheMaxWordBytes: longer pieces are not cached (HF's MAX_LENGTH);
	// they are rare and would pin memory.
	cacheMaxWordBytes = 256
)

// wordCache maps a piece to its ids; safe for concurrent use.
type wordCache struct {
	mu sync.RWMutex
	m  map[string][]int32
}

func (c *wordCache) get(w string) ([]int32, bool) {
	c.mu.RLock()
	ids, ok := c.m[w]
	c.mu.RUnlock()
	return ids, ok
}

// put stores a copy of ids for w.
func (c *wordCache) put(w string, ids []int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string][]int32)
	}
	if len(c.m) >= cacheWords {
		return
	}
	c.m[w] = append([]int32(nil), ids...)
}
