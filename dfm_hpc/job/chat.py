"""A terminal chat with a run's model, in the model's own chat template (`python -m dfm_hpc chat RUN`).

The login side (login/chat.py) picks the model and starts this process; it loads the model (base plus
adapter merged, as evaluate does), reads one user turn per line from stdin and streams the reply to
stdout as it is generated. `/reset` starts over, `/exit` (or end of input) ends it. With `--save`
every turn goes to a JSONL transcript as it happens, so an interrupted chat keeps what was said.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

PROMPT = "you> "
REPLY = "model> "


def reply(model, tokenizer, messages, args, out) -> str:
    """Generate the assistant's turn after `messages` in the tokenizer's chat template, streaming to `out`."""
    import torch
    from transformers import TextIteratorStreamer

    if args.show_prompt:  # what the model sees: the template's own markers (debugging a template)
        out.write(f"[prompt]\n{tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)}"
                  "\n[/prompt]\n")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    ids = {k: v.to(model.device) for k, v in ids.items()}
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p} if args.temperature > 0 \
        else {"do_sample": False}
    kwargs = dict(**ids, max_new_tokens=args.max_new_tokens, streamer=streamer,
                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                  **sampling)
    worker = threading.Thread(target=lambda: torch.no_grad()(model.generate)(**kwargs), daemon=True)
    worker.start()
    parts = []
    out.write(REPLY)
    for piece in streamer:
        parts.append(piece)
        out.write(piece)
        out.flush()
    worker.join()
    text = "".join(parts)
    out.write("\n" if text.strip() else f"(only whitespace: {json.dumps(text)})\n")
    out.flush()
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dfm_hpc.job.chat")
    ap.add_argument("model")
    ap.add_argument("--name", default="model")
    ap.add_argument("--run-dir", default=None, help="where a tiny: base model is built (its cache/)")
    ap.add_argument("--system", default=None)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--save", default=None, help="append each turn to this JSONL transcript")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--show-prompt", action="store_true", help="print each prompt as the chat template renders it")
    args = ap.parse_args(argv)
    out = sys.stdout
    from dfm_hpc.job.rank import quiet_libraries

    quiet_libraries(verbose=False, gpus=1)  # before transformers is imported: no progress bars in the chat
    t0 = time.time()
    path = args.model
    if path.startswith("tiny:"):  # a run's base in the tests and the demo: built, not downloaded
        from dfm_hpc.tiny.models import resolve

        path = resolve(path, Path(args.run_dir or ".") / "cache")
    from dfm_hpc.job.scoring import load

    model, tokenizer = load(path)
    if args.seed is not None:
        from transformers import set_seed

        set_seed(args.seed)
    print(f"{args.name} ({args.model}) loaded in {time.time() - t0:.1f} s; one message per line, "
          "/reset to start over, /exit or Ctrl-D to end", flush=True)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    transcript = open(args.save, "a", encoding="utf-8") if args.save else None
    try:
        while True:
            out.write(PROMPT)
            out.flush()
            line = sys.stdin.readline()
            if not line or line.strip() == "/exit":
                break
            text = line.rstrip("\n")
            if text.strip() == "/reset":
                messages = list(system)
                print("(new conversation)", flush=True)
                continue
            if not text.strip():
                continue
            messages.append({"role": "user", "content": text})
            answer = reply(model, tokenizer, messages, args, out)
            messages.append({"role": "assistant", "content": answer})
            if transcript:
                transcript.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": args.name,
                                             "user": text, "assistant": answer}, ensure_ascii=False) + "\n")
                transcript.flush()
    except KeyboardInterrupt:
        out.write("\n")
    finally:
        if transcript:
            transcript.close()
    if args.save:
        print(f"transcript: {Path(args.save)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
