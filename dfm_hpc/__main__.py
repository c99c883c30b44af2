"""`python -m dfm_hpc`: a subcommand (status, logs, cancel, rerun, list, compare, export-evals, prefetch, calibrate,
chat), --help, else the Hydra app.

Bad input of any kind ends in exit 2 with one paragraph on stderr, never a traceback
(DFM_HPC_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

SUBCOMMANDS = ("status", "logs", "cancel", "rerun", "list", "compare", "prefetch", "calibrate", "chat", "export-evals")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dfm_hpc", description="Runs made by dfm_hpc.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status", help="job states, time and cost per stage (no RUN: recent runs)")
    s.add_argument("run", nargs="?")
    s.add_argument("--runs-root", default="runs")
    s = sub.add_parser("logs", help="show or follow a rank's log")
    s.add_argument("run")
    s.add_argument("--runs-root", default="runs")
    s.add_argument("--stage")
    s.add_argument("--rank", type=int, default=0)
    s.add_argument("--follow", "-f", action="store_true")
    s.add_argument("--lines", "-n", type=int, default=40)
    s = sub.add_parser("cancel", help="cancel every job of a run (or sweep)")
    s.add_argument("run")
    s.add_argument("--runs-root", default="runs")
    s = sub.add_parser("rerun", help="run a snapshotted config again in a new run dir")
    s.add_argument("run")
    s.add_argument("--runs-root", default="runs")
    s.add_argument("overrides", nargs="*", help="key=value changes")
    s.add_argument("--fresh", action="store_true", help="also redo the stages that finished")
    s.add_argument("--failed", action="store_true",
                   help="only the points that failed, were cancelled or stopped unfinished (one array)")
    s.add_argument("--dry-run", action="store_true", help="say what would run; write and queue nothing")
    s = sub.add_parser("list", help="experiments and recent runs")
    s.add_argument("--runs-root", default="runs")
    s = sub.add_parser("compare", help="evaluate results of runs (or sweep points) side by side, as Markdown")
    s.add_argument("runs", nargs="+", metavar="RUN_OR_RESULTS", help="run dir, sweep dir or results.json")
    s.add_argument("--runs-root", default="runs")
    s.add_argument("--out", help="also write the table to this file")
    s.add_argument("--allow-mismatch", action="store_true",
                   help="show columns whose model name carries different weight hashes (marked), instead of refusing")
    s = sub.add_parser("export-evals", help="a run's evaluate results in the every-eval-ever format (JSON files)")
    s.add_argument("runs", nargs="+", metavar="RUN_OR_RESULTS", help="run dir, sweep dir or results.json")
    s.add_argument("--out", help="where to write (default: each run's stages/evaluate/every_eval_ever/)")
    s.add_argument("--runs-root", default="runs")
    s = sub.add_parser("prefetch",
                       help="hub models/datasets an experiment needs: cached for the jobs? (--download fetches)")
    s.add_argument("overrides", nargs="*", help="+experiment=NAME key=value ... as for a launch")
    s.add_argument("--download", action="store_true", help="fetch what is missing into the jobs' HF_HOME")
    s = sub.add_parser("chat", help="talk to a run's model in its own chat template (here, or served by a job)")
    s.add_argument("run")
    s.add_argument("overrides", nargs="*", help="cluster=NAME: where to chat (default: where the run ran)")
    s.add_argument("--stage", choices=("base", "cpt", "sft", "dpo"), help="default: the last trained stage")
    s.add_argument("--system", help="a system prompt")
    s.add_argument("--temperature", type=float, default=0.7, help="0: greedy")
    s.add_argument("--max-new-tokens", type=int, default=256)
    s.add_argument("--seed", type=int)
    s.add_argument("--save", action="store_true", help="keep the transcript as JSONL in RUN/chat/")
    s.add_argument("--show-prompt", action="store_true", help="print each prompt as the model's template renders it")
    s.add_argument("--dry-run", action="store_true", help="on a cluster: render the serving job, queue nothing")
    s.add_argument("--runs-root", default="runs")
    s = sub.add_parser("calibrate", help="throughput entries a finished run measured (for conf/throughput/)")
    s.add_argument("run")
    s.add_argument("--runs-root", default="runs")
    return p


class BadInput(Exception):
    """Exit 2 with this message."""


def _default_cluster(argv: List[str]) -> List[str]:
    """No cluster=...: take $DFM_CLUSTER, or lumi on LUMI, else the config's default (local)."""
    if any(a.split("=")[0].lstrip("+") == "cluster" for a in argv):
        return argv
    from dfm_hpc import CONF_DIR, lumi

    chosen = os.environ.get("DFM_CLUSTER") or ("lumi" if lumi.on_lumi() else None)
    if chosen and not (CONF_DIR / "cluster" / f"{chosen}.yaml").is_file():
        known = sorted(p.stem for p in (CONF_DIR / "cluster").glob("*.yaml"))
        raise BadInput(f"the environment variable DFM_CLUSTER={chosen!r} names no cluster profile (known: "
                       f"{', '.join(known)}); fix or unset it (e.g. in ~/.bashrc), or pass cluster=NAME")
    return [*argv, f"cluster={chosen}"] if chosen else argv


def _not_a_subcommand(word: str) -> Optional[str]:
    """A bare word that is neither a subcommand nor an override: most likely a mistyped subcommand."""
    import difflib

    if "=" in word or word.startswith(("-", "+", "~")):
        return None
    close = difflib.get_close_matches(word, SUBCOMMANDS, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]}?" if close else ""
    return (f"{word!r} is not a subcommand ({', '.join(SUBCOMMANDS)}) nor a key=value override.{hint} "
            "python -m dfm_hpc --help lists both")


def _bad_input_errors():
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    return (BadInput, OSError, ValueError, LookupError, TypeError, yaml.YAMLError, OmegaConfBaseException)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except _bad_input_errors() as e:
        if os.environ.get("DFM_HPC_DEBUG"):
            raise
        from dfm_hpc.redact import redact_text

        text = " ".join(str(e).split()) or type(e).__name__
        what = "" if isinstance(e, BadInput) else f" ({type(e).__name__})"
        print(f"dfm_hpc: {redact_text(text)}{what}. Nothing was changed. (DFM_HPC_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 2


def _main(argv: List[str]) -> int:
    if argv and _not_a_subcommand(argv[0]) and argv[0] not in SUBCOMMANDS:
        raise BadInput(_not_a_subcommand(argv[0]))
    if argv and argv[0] in SUBCOMMANDS:
        parser = _parser()
        args, extra = parser.parse_known_args(argv)
        # `rerun RUN --failed key=value`: argparse leaves overrides after a flag unparsed
        if extra and args.cmd in ("rerun", "chat") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides, extra = args.overrides + extra, []
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.cmd == "compare":
            from dfm_hpc.login import compare

            return compare.compare(args.runs, args.runs_root, args.out, args.allow_mismatch)
        if args.cmd == "export-evals":
            from dfm_hpc.login import export_evals

            return export_evals.export(args.runs, args.out, args.runs_root)
        if args.cmd == "chat":
            from dfm_hpc.login import chat

            return chat.chat(args.run, args.stage, args.overrides, args.dry_run, args, args.runs_root)
        if args.cmd == "calibrate":
            from dfm_hpc.login import calibrate

            return calibrate.calibrate(args.run, args.runs_root)
        from dfm_hpc.login import status

        if args.cmd == "status":
            return status.status(args.run, args.runs_root)
        if args.cmd == "logs":
            from dfm_hpc.login import logs

            return logs.logs(args.run, args.stage, args.rank, args.follow, args.lines, args.runs_root)
        if args.cmd == "cancel":
            from dfm_hpc.login import cancel

            return cancel.cancel(args.run, args.runs_root)
        if args.cmd == "rerun":
            from dfm_hpc.login import rerun

            return rerun.rerun(args.run, args.overrides, args.fresh, args.runs_root, args.failed, args.dry_run)
        if args.cmd == "prefetch":
            return _prefetch(_default_cluster(args.overrides), args.download)
        return status.list_all(args.runs_root)
    if "--help" in argv or "-h" in argv:  # dfm_hpc's own, from conf/'s files: Hydra's composes for seconds
        from dfm_hpc.login import usage

        print(usage.text(), end="")
        return 0
    from dfm_hpc.login import launch

    return launch.main(_default_cluster(argv))


def _prefetch(overrides: List[str], download: bool) -> int:
    from dfm_hpc.login import compose, console, prefetch

    try:
        cfg = compose.compose_config(overrides)
    except ValueError as e:  # compose.Problems, one per line
        return console.report_problems(str(e).splitlines())
    return prefetch.run(cfg, download)


if __name__ == "__main__":
    sys.exit(main())
