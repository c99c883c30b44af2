"""The GPU check's Markdown table (gpu_bench.md) from its JSON result."""

from __future__ import annotations

LABELS = {"cpt": "CPT, plain torch (no ZeRO)", "cpt_zero2": "CPT, DeepSpeed ZeRO-2",
          "cpt_zero3": "CPT, DeepSpeed ZeRO-3", "sft_lora": "LoRA SFT (r {lora_r}, q/k/v/o)",
          "fullft": "full-FT SFT, packed chats"}


def _why(r: dict) -> str:
    return ("skipped: " + r["skipped"] if "skipped" in r else "failed: " + r.get("error", "?")).replace("|", "/")[:160]


def _mem(r: dict) -> tuple[str, str]:
    used = r.get("device_used_gb", r.get("peak_memory_gb"))
    est = r.get("estimate_gb")
    err = f" ({r['estimate_error']:+.0%})" if "estimate_error" in r else ""
    return ("-" if used is None else f"{used}"), ("-" if est is None else f"{est}{err}")


def markdown(res: dict) -> str:
    parts = res["parts"]
    env = parts.get("env", {})
    head = (f"GPU check ({res['mode']}): {env.get('device', '?')}, {env.get('memory_gb', '-')} GB, torch "
            f"{env.get('torch', '?')} (CUDA {env.get('cuda')}), Python {env.get('python', '?')}, peak "
            f"{env.get('peak_tflops', '?')} TF dense bf16, {res['date']}")
    lines = [head, ""]
    carried = env.get("carried", {})
    if "error" in env or "skipped" in env:
        lines += [f"env: {_why(env)}", ""]
    elif carried.get("problems"):
        lines += ["carried wheels against the installed versions: " + "; ".join(carried["problems"])[:600], ""]
    lines += ["| part | tokens/s | MFU | micro-batch x tokens | GPU memory used, GB | plan's estimate, GB (error) |"
              " notes |", "|---|---|---|---|---|---|---|"]
    shapes = res["shapes"]
    for key, label in LABELS.items():
        r = parts.get(key)
        if r is None:
            continue
        label = label.format(**shapes)
        if "tokens_per_s" not in r:
            lines.append(f"| {label} | - | - | - | - | - | {_why(r)} |")
            continue
        used, est = _mem(r)
        if key == "fullft":
            rows = f"{r['rows_per_step']} x {r['seq']:,}"
            notes = f"{r['step_s']} s/step, HFU {r['hfu']:.1%}, checkpointing, {r['chats_per_row']} chats/row"
        else:
            rows = f"{r['micro_batch']} x {r['seq']:,}"
            notes = f"{r['step_s']} s/step, no checkpointing"
        lines.append(f"| {label} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {rows} | {used} | {est} | {notes} |")
    lines += ["", "GPU memory used: what the GPU held for the part's process as its timed steps ended (allocator "
              "cache, CUDA context, NCCL); error: the estimate against it (+: the estimate is higher)."]
    tr = parts.get("translate")
    if tr and "hf_sorted" in tr:
        lines += ["", f"Translate, {'MADLAD-3B' if res['mode'] == 'gpu' else 'tiny'}-shaped T5, hf backend: "
                  f"{tr['segments']} segments, {tr['source_tokens']:,} source tokens"
                  + (f", peak {tr['peak_allocated_gb']} GB allocated" if "peak_allocated_gb" in tr else ""),
                  "", "| run | seconds | segments/s | source tokens/s |", "|---|---|---|---|"]
        for key in ("hf_naive", "hf_sorted", "ct2_sorted"):
            if key in tr:
                r = tr[key]
                lines.append(f"| {key} | {r['seconds']} | {r['segments_per_s']} | {r['source_tokens_per_s']:,.0f} |")
        lines.append(f"\nsorted vs naive (hf): {tr['sorted_vs_naive']}x (target >= "
                     f"{res['targets']['translate_hf_sorted_vs_naive']}x)" + (f"; {tr['ct2']}" if "ct2" in tr else ""))
    elif tr:
        lines += ["", f"Translate: {_why(tr)}"]
    pl = parts.get("pipeline")
    if pl:
        lines += ["", f"Pipeline (`python -m dfm_hpc {res['pipeline']}`): " +
                  (f"`{pl['command']}` done in {pl['wall_s']} s, stages done: {', '.join(pl['stages_done']) or '-'}"
                   if "command" in pl else _why(pl))]
    lines += ["", "Wall time per part: " + ", ".join(f"{k} {r.get('wall_s', '-')} s" for k, r in parts.items())]
    return "\n".join(lines) + "\n"
