#!/usr/bin/env python3
"""GPU peers of moesys' GPU benchmarks (issue 9), run by `moesys bench ... --device cuda`.

Hugging Face transformers on the same checkpoint directory moesys reads (written by
`moesys random-model` or the bench suites), greedy batch-1 decode, timed per token
with torch.cuda.synchronize, median; prints one JSON object {"tokens_per_s": ...}.

  decode:  the model fully on the GPU, bf16, eager attention.
  offload: accelerate's device_map="auto" with max_memory capping the GPU at
           --gpu-mem bytes (the rest of the weights in CPU RAM, moved to the GPU
           layer by layer each forward): the naive offload users reach for.

The prompt is the same token formula moesys uses: (i*7919 + 13) % vocab.
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["decode", "offload"])
    ap.add_argument("--model", required=True, help="checkpoint directory (config.json + safetensors)")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--steps", type=int, default=32, help="timed decode steps")
    ap.add_argument("--gpu-mem", type=int, default=0, help="offload: GPU memory cap in bytes")
    a = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not torch.cuda.is_available():
        sys.exit("no CUDA device for torch")
    cfg = AutoConfig.from_pretrained(a.model)
    kw = dict(torch_dtype=torch.bfloat16, attn_implementation="eager")
    if a.mode == "decode":
        model = AutoModelForCausalLM.from_pretrained(a.model, **kw).cuda()
    else:
        if a.gpu_mem <= 0:
            sys.exit("offload needs --gpu-mem")
        model = AutoModelForCausalLM.from_pretrained(
            a.model, device_map="auto", max_memory={0: a.gpu_mem, "cpu": "200GiB"}, **kw)
    model.eval()
    dev = "cuda"
    ids = torch.tensor([[(i * 7919 + 13) % cfg.vocab_size for i in range(a.prompt)]], device=dev)
    per = []
    with torch.inference_mode():
        for warm, steps in ((True, 2), (False, a.steps)):
            out = model(input_ids=ids, use_cache=True)
            pkv, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(steps):
                torch.cuda.synchronize()
                t = time.perf_counter()
                out = model(input_ids=nxt, past_key_values=pkv, use_cache=True)
                pkv, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                nxt.item()  # the token reaches the host, as in moesys
                torch.cuda.synchronize()
                if not warm:
                    per.append(time.perf_counter() - t)
    med = statistics.median(per)
    print(json.dumps({"mode": a.mode, "tokens_per_s": 1 / med, "median_s": med, "steps": len(per),
                      "torch": torch.__version__, "device": torch.cuda.get_device_name(0)}))


if __name__ == "__main__":
    main()
