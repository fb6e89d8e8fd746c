"""`nscnet <step> --name value ...`: builds the step's config dataclass from argv and runs it.

Options are derived from the dataclass fields (`nscnet.config`): `--pca_dim 64` and
`--pca-dim 64` are both accepted; booleans take true/false (a bare `--truth` means true);
tuples take comma-separated values (`--k_values 64,128,256`). A step with presets
(`nscnet.presets`) takes `--preset NAME`: its values sit between the built-in defaults and the
options you give, so the config that runs (and MLflow logs) holds every value in effect.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

from nscnet import presets
from nscnet.config import ConfigError, DataError, field_type, fields
from nscnet.steps import STEPS

TRUE = {"true", "1", "yes", "y", "on"}
FALSE = {"false", "0", "no", "n", "off"}


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_int_tuple(text: str) -> tuple[int, ...]:
    text = str(text).strip().strip("()[]")
    if not text:
        return ()
    try:
        return tuple(int(float(part)) for part in text.replace(";", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


PARSERS = {bool: parse_bool, int: int, float: float, str: str, tuple: parse_int_tuple}


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per dataclass field, underscore and dash spellings both."""
    for f in fields(cls):
        kind = field_type(cls, f.name)
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        if isinstance(default, bool):
            shown = str(default).lower()
        help_text = f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%")  # argparse formats help
        extra: dict[str, Any] = {}
        if kind is bool:
            extra = {"nargs": "?", "const": True}
        if f.metadata.get("choices"):
            extra["choices"] = f.metadata["choices"]
        parser.add_argument(*names, dest=f.name, type=PARSERS[kind], default=argparse.SUPPRESS,
                            help=help_text, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nscnet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for step in STEPS.values():
        step_parser = sub.add_parser(step.name, help=step.summary, description=step.config.__doc__)
        add_config_arguments(step_parser, step.config)
        if presets.names(step.name):
            step_parser.add_argument("--preset", choices=presets.names(step.name), default=argparse.SUPPRESS,
                                     help="recipe whose values replace the built-in defaults; the options you give "
                                          "win (nscnet/presets.py; docs/RESULTS.md)")
    return parser


def under_mlflow_run(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the experiment of the run `mlflow run` created (MLFLOW_RUN_ID), the one its
    params go to; ConfigError when the user named another (mlflow run chooses it, not -P)."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return values
    from nscnet.runs import tracking

    actual = tracking.project_experiment()
    if actual is None:
        return values
    if values.get("experiment", actual) != actual:
        raise ConfigError(f"experiment={values['experiment']!r}: under `mlflow run` this run lives in the experiment "
                          f"mlflow run chose ({actual!r}); choose it with `mlflow run --experiment-name "
                          f"{values['experiment']}`")
    return {**values, "experiment": actual}


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields of the parsed command line: built-in defaults, then the preset, then
    the options given (`nscnet.presets.resolve`); under `mlflow run`, its run's experiment."""
    given = {k: v for k, v in vars(args).items() if k not in ("step", "verbose", "preset")}
    values = presets.resolve(args.step, getattr(args, "preset", None), given)
    if "experiment" in {f.name for f in fields(STEPS[args.step].config)}:
        values = under_mlflow_run(values)
    return values


def config_from_args(step: str, argv: Sequence[str]) -> Any:
    """The config instance of `step` built from command-line words (no step name)."""
    return STEPS[step].config(**config_values(build_parser().parse_args([step, *argv])))


def run(argv: Sequence[str]) -> tuple[int, Any]:
    """Run one `nscnet` command line (words after `nscnet`) in this process: (exit status, the
    runner's result). `main` and the demo (`nscnet.demo`) both go through here."""
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("numba", "matplotlib", "urllib3", "alembic", "PIL", "faiss", "mlflow.system_metrics"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for chatty in ("kaleido", "choreographer", "logistro"):  # the PNG renderer's shutdown chatter
        logging.getLogger(chatty).setLevel(logging.CRITICAL)
    step = STEPS[args.step]
    try:
        cfg = step.config(**config_values(args))
    except ConfigError as exc:
        print(f"nscnet {step.name}: {exc}", file=sys.stderr)
        return 2, None
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():  # log lines lift the progress bars instead of cutting into them
            result = step.load()(cfg)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        print(f"nscnet {step.name}: error: {exc}", file=sys.stderr)
        return 1, None
    except KeyboardInterrupt:
        print(f"nscnet {step.name}: interrupted", file=sys.stderr)
        return 130, None
    if isinstance(result, dict) and result.get("run_id"):
        print(f"run_id={result['run_id']}")  # for scripts: the MLflow run this step logged to
    return 0, result


def main(argv: Sequence[str] | None = None) -> int:
    return run(list(sys.argv[1:] if argv is None else argv))[0]


if __name__ == "__main__":
    raise SystemExit(main())
