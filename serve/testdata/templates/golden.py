#!/usr/bin/python3
# Renders every template here (and serve/default.jinja as "default") for
# every conversation in cases.json with Python's Jinja2 configured as
# Hugging Face transformers' apply_chat_template configures it, and writes
# golden.json, which serve's template tests compare moesys' renderer with.
# Run from this directory with Debian's python3 (apt-get install
# python3-jinja2): /usr/bin/python3 golden.py
import glob, json, os
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
env.filters['tojson'] = tojson
env.globals['raise_exception'] = raise_exception
cases = json.load(open('cases.json'))
files = sorted(glob.glob('*.jinja')) + ['../../default.jinja']
out = {}
for f in files:
    name = os.path.basename(f)[:-len('.jinja')]
    t = env.from_string(open(f).read())
    for c in cases:
        for agp in (True, False):
            key = f"{name}/{c['name']}/agp={agp}"
            try:
                out[key] = {"text": t.render(messages=c['messages'], bos_token='<s>', eos_token='</s>', add_generation_prompt=agp)}
            except jinja2.exceptions.TemplateError as e:
                out[key] = {"error": str(e)}
with open('golden.json', 'w') as w:
    json.dump(out, w, indent=1, ensure_ascii=False, sort_keys=True)
    w.write('\n')
print(f"golden.json: {len(out)} renderings of {len(files)} templates")
