"""How every kind of model loads — embedder, cross-encoder, or a head to come — along one path.

`LoadOptions` says how (providers, threads, precision, runtime, compile, batch budget, ...); it
is validated once, when it is made (`validate_load_options`). `Pretrained.from_pretrained`, every
kind's, chooses the precision and runtime the kind runs (its `Runs`), resolves the files and the
name (`plan_load`), and hands the `LoadPlan` to the kind's `from_plan`, which reads its config,
opens the kind's `graph` for the plan in a session (`runtime.backends`) and assembles the model.

`LoadSettings`, the part of LoadOptions that a user sets per process, is declared with
`settings.setting`: each field is a flag and an environment variable on `serve` (ServerConfig is
a LoadSettings), `embed`, `bench`, `embed-file` and, the ones that decide the files, `pull`.

Light on purpose: the CLI builds its flags from these before ONNX Runtime is imported.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar

from embedserve.cpu import THREADS_PER_CPU, max_model_threads
from embedserve.models import DEFAULT_MODEL
from embedserve.planning import LANE_SESSION_MODES, MAX_BATCH_TOKENS, session_mode
from embedserve.precision import (
    AUTO,
    CUDA_BOUND,
    PRECISIONS,
    RUNTIMES,
    Precision,
    get_precision,
    resolve_precision,
    this_cpus_precision,
)
from embedserve.settings import at_most, non_negative, positive, setting
from embedserve.tokenizer_pipeline import TOKENIZER_MODES
from embedserve.vector_cache import DEFAULT_CACHE_BYTES

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's from Python 3.11

    from embedserve.runtime.session import SessionOptions

# Runtimes a model may be asked to run on, "auto" aside.
NAMED_RUNTIMES = tuple(r for r in RUNTIMES if r != "auto")


def model_threads(value: int) -> int:
    """`value` if a model may run on that many ONNX Runtime threads here, else an
    ArgumentTypeError saying the most (the flag's error; `validate_load_options` names the
    option)."""
    why = f"{THREADS_PER_CPU} per CPU this process may use; more threads only take turns on them"
    return at_most(value, max_model_threads(), why)


# ONNX Runtime reads the spin as a 32-bit int and, past it, keeps its own spin with a warning at
# a level embedserve does not log (ORT 1.31): refused here instead of silently ignored.
MAX_IDLE_SPIN_US = 2**31 - 1


def spin_us(value: int) -> int:
    """`value` if ONNX Runtime takes it as an idle spin, else an ArgumentTypeError saying the
    most (as `model_threads`)."""
    return at_most(value, MAX_IDLE_SPIN_US, "ONNX Runtime ignores more")


def batch_tokens(value: int) -> int:
    """`value` if it is a batch budget that can be useful, else an ArgumentTypeError saying the
    most (as `model_threads`)."""
    why = (
        "16 x the GPU default: a bigger batch runs no faster, and one batch of it would take "
        "gigabytes"
    )
    return at_most(value, MAX_BATCH_TOKENS, why)


def batch_token_budget(text: str) -> int:
    """A batch budget on the command line or in the environment: 1 to MAX_BATCH_TOKENS."""
    return batch_tokens(positive(text))


def idle_spin(text: str) -> int:
    """An idle spin on the command line or in the environment: 0 to MAX_IDLE_SPIN_US."""
    return spin_us(non_negative(text))


def threads(text: str) -> int:
    """A thread count on the command line or in the environment: 1 to `max_model_threads()`."""
    return model_threads(positive(text))


@dataclass(frozen=True)
class LoadSettings:
    """How to load a model, as every command takes it: each field is a flag and an env var."""

    max_batch_tokens: int | None = setting(
        None,
        "padded tokens (longest x rows) per model batch, up to "
        f"{MAX_BATCH_TOKENS} (default: 1024 on the CPU, 16384 on a GPU)",
        type=batch_token_budget,
    )
    providers: str | Sequence[str] | None = setting(
        None,
        "ONNX Runtime providers: cpu, cuda, or a provider name, comma separated for several "
        "(default: CUDA when a GPU is present, else CPU; cuda without a CUDA device is refused)",
        type=str,
        metavar="NAMES",
    )
    intra_op_threads: int | None = setting(
        None,
        f"ONNX Runtime threads per model, up to {THREADS_PER_CPU} per CPU (default: ONNX "
        "Runtime's choice)",
        type=threads,
    )
    idle_spin_us: int | None = setting(
        None,
        "microseconds an idle ONNX Runtime model thread spins for more work before it sleeps "
        "(default: ONNX Runtime's own, ~25 ms after each run); 0 stops right after each run: "
        "up to a core less busy between sparse requests, with a higher p99 (see "
        "docs/operations.md, CPU between requests)",
        type=idle_spin,
        metavar="US",
    )
    quantize: str | None = setting(
        None, "the older spelling of --precision int8", type=str, choices=("int8",), metavar="KIND"
    )
    precision: str | None = setting(
        None,
        "fp32 (exact, the CPU default), bf16, int8, fp16 (the CUDA default), or auto (on CUDA "
        "its default; on a CPU int8 where it measures faster, else fp32); see docs/models.md "
        "Precision and runtime",
        type=str.lower,
        choices=(*PRECISIONS, AUTO),
        metavar="NAME",
    )
    runtime: str | None = setting(
        None,
        "onnxruntime, openvino or auto (the faster one for the precision)",
        type=str.lower,
        choices=RUNTIMES,
        metavar="NAME",
    )
    compile: bool = setting(
        False,
        "compile each model's safetensors even where it ships an ONNX graph (from a hub "
        "repo, download those weights instead of the graph)",
    )
    cache_bytes: int = setting(
        DEFAULT_CACHE_BYTES,
        "bytes of each embedding model's exact result cache: vectors by the ids the model saw, "
        "shared by every route (0 turns it off)",
        type=non_negative,
    )
    bulk_session: str = setting(
        "auto",
        "a second session of each CPU embedding model with one thread, on which calls with many "
        "micro-batches (embed-file, large embed calls) run as many batches at once as the model "
        "has threads (its memory: the model's weights once more); auto: at 2 to 4 model threads "
        "for graphs up to 512 MiB",
        type=str.lower,
        choices=LANE_SESSION_MODES,
        metavar="MODE",
    )
    tokenizer_mode: str = setting(
        "transformers",
        "how tokenizer.json is read: transformers (the pipeline transformers 5 and so "
        "sentence-transformers build from it and the tokenizer class) or as-saved (the file as "
        "it is, as TEI reads it); see docs/models.md",
        type=str.lower,
        choices=TOKENIZER_MODES,
        metavar="MODE",
    )

    rerank_instruction: str | None = setting(
        None,
        "an LLM reranker's task, the <Instruct> of its prompt (default: Qwen3-Reranker's web "
        "search instruction); requests may send their own `instruction`",
        type=str,
        metavar="TEXT",
    )

    def __post_init__(self) -> None:
        validate_load_options(self)


@dataclass(frozen=True)
class LoadOptions(LoadSettings):
    """Everything loading takes, for any kind of model: the settings above, plus what a library
    caller (or the server, per model) sets for one model.

    `precision` is "fp32" (exact), "bf16" (OpenVINO on CPUs with native bf16), "int8" or "fp16";
    None lets the kind choose (fp32, or a kind's CUDA precision on a GPU); `quantize="int8"` is
    the older spelling of "int8" and is folded into `precision` here. `runtime` is
    "onnxruntime", "openvino" or "auto" (the faster one for the precision). `compile=True`
    compiles the safetensors even where the model ships an ONNX graph (and downloads those
    weights, not the graph, from a hub repo). `max_batch_tokens` defaults to the precision's CPU
    budget on a CPU, 16,384 on a GPU.
    """

    # Another model folder whose tokenizer.json and configs to use, for a graph shipped without.
    tokenizer: str | os.PathLike[str] | None = None
    # The model's name in `model_info` (default: its catalog name, folder name or repo id).
    name: str | None = None
    # ONNX Runtime starts an inter-op pool only in parallel execution mode, and every session
    # here runs sequentially (an encoder's nodes are a chain): this starts no thread (8 of them
    # added none to a MiniLM session, ORT 1.31). Kept for callers that pass it; no flag, since a
    # flag that changes nothing would be a setting to tune in vain.
    inter_op_threads: int | None = None
    # Tokens per input the model sees, special tokens included (default: the model's own limit).
    max_length: int | None = None

    @classmethod
    def of(cls, options: LoadSettings | None = None, **changes: Any) -> LoadOptions:
        """`options` with `changes`, validated: a LoadOptions, or any LoadSettings (the server's
        config) whose settings it takes; `changes` are LoadOptions' field names."""
        if options is not None and not isinstance(options, LoadSettings):
            # Not an AttributeError from reading its fields below.
            raise TypeError(
                f"options must be a LoadOptions, not {type(options).__name__}; pass its fields "
                "as keyword arguments instead"
            )
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise TypeError(f"unknown load option(s) {unknown}; the options are {known}")
        taken = fields(cls if isinstance(options, LoadOptions) else LoadSettings)
        base = {f.name: getattr(options, f.name) for f in taken} if options is not None else {}
        return cls(**{**base, **changes})


# The integer options that may be None, and the least value each takes.
INTEGER_OPTIONS = {
    "max_batch_tokens": 1,
    "intra_op_threads": 1,
    "inter_op_threads": 1,
    "max_length": 1,
    "idle_spin_us": 0,
}


def provider_names(providers: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    """`providers` as a name or a tuple of names, stripped: a string may list several, comma
    separated (`--providers cuda,cpu`, as the flag's NAMES says). Whether ONNX Runtime has
    each is asked where the model is planned (runtime.providers), not here, where it is not
    imported."""
    if providers is None:
        return None
    if isinstance(providers, str):
        names: tuple[object, ...] = tuple(providers.split(","))
    else:
        names = tuple(providers)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(
            f"providers must be a name or a list of names (auto, cpu, cuda or an ONNX Runtime "
            f"provider), got {providers!r}"
        )
    stripped = tuple(str(n).strip() for n in names)
    if len(stripped) == 1 and stripped[0].lower() == "auto":
        return "auto"  # compared as written below: `providers in (None, "auto")`
    return stripped[0] if isinstance(providers, str) and len(stripped) == 1 else stripped


# The integer options with a most, each checked (after INTEGER_OPTIONS' least) by its function.
RANGE_CHECKS = {
    "max_batch_tokens": batch_tokens,
    "intra_op_threads": model_threads,
    "inter_op_threads": model_threads,
    "idle_spin_us": spin_us,
}


def validate_load_options(options: LoadSettings) -> None:
    """Check every option once, where options are made, and normalize them: `precision` becomes
    a precision's name (with `quantize` folded in) or None, `runtime` lower case, `providers` a
    string or a tuple. Raises ValueError naming the option, what it got and what is allowed."""
    cache_bytes = options.cache_bytes
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise ValueError(f"cache_bytes must be an integer >= 0, got {cache_bytes!r}")
    precision = None
    if isinstance(options.precision, str) and options.precision.lower() == AUTO:
        if options.quantize is not None:
            raise ValueError(f"quantize={options.quantize!r} contradicts precision='auto'")
        precision = AUTO  # chosen where the model is planned: on a GPU it means the GPU's default
    elif options.precision is not None or options.quantize is not None:
        precision = resolve_precision(options.precision, options.quantize).name
    runtime = options.runtime
    if runtime is not None:
        if not isinstance(runtime, str) or runtime.lower() not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        runtime = runtime.lower()
    providers = provider_names(options.providers)
    for name, least in INTEGER_OPTIONS.items():
        value = getattr(options, name, None)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < least
        ):
            kind = "a positive integer" if least == 1 else f"an integer >= {least}"
            raise ValueError(f"{name} must be {kind} or None, got {value!r}")
    for name, check in RANGE_CHECKS.items():
        value = getattr(options, name, None)
        if value is not None:
            try:
                check(value)
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"{name} {exc}") from None
    if not isinstance(options.compile, bool):
        raise TypeError(f"compile must be True or False, got {options.compile!r}")
    tokenizer_mode = options.tokenizer_mode
    if not isinstance(tokenizer_mode, str) or tokenizer_mode.lower() not in TOKENIZER_MODES:
        raise ValueError(f"tokenizer_mode must be one of {TOKENIZER_MODES}, got {tokenizer_mode!r}")
    bulk_session = options.bulk_session
    # Any case here, at the library's boundary (as the other load settings); exact below it.
    bulk_session = session_mode(
        bulk_session.lower() if isinstance(bulk_session, str) else bulk_session, "bulk_session"
    )
    # Frozen: the normalized values are set once, here, before anyone reads them.
    object.__setattr__(options, "precision", precision)
    object.__setattr__(options, "runtime", runtime)
    object.__setattr__(options, "providers", providers)
    object.__setattr__(options, "tokenizer_mode", tokenizer_mode.lower())
    object.__setattr__(options, "bulk_session", bulk_session)


@dataclass(frozen=True)
class Runs:
    """What one kind of model runs: its precisions and runtimes, and the precision it runs at on
    CUDA through IOBinding (None: on CUDA it takes ONNX Runtime's plain session too)."""

    kind: str  # the kind's name in messages, plural: "embedders"
    precisions: tuple[str, ...] = tuple(PRECISIONS)
    runtimes: tuple[str, ...] = NAMED_RUNTIMES
    cuda_precision: str | None = None


@dataclass(frozen=True)
class LoadPlan:
    """Where a model's files are, what it is called, and the precision and runtime it runs at."""

    model_dir: Path  # the graph or safetensors
    config_dir: Path  # config.json and tokenizer.json: the model's own, or `tokenizer`'s folder
    name: str
    precision: Precision
    runtime: str  # a runtime name (backends.choose_runtime), or CUDA_BOUND
    options: LoadOptions

    @property
    def session_options(self) -> SessionOptions:
        from embedserve.runtime.session import SessionOptions

        options = self.options
        return SessionOptions(
            options.providers,
            options.intra_op_threads,
            options.inter_op_threads,
            options.idle_spin_us,
        )

    def max_batch_tokens(self, provider: str) -> int:
        """The batch budget asked for, else the precision's on a CPU, else the GPU one."""
        from embedserve.planning import default_max_batch_tokens

        asked = self.options.max_batch_tokens
        return asked or default_max_batch_tokens(provider, self.precision.cpu_batch_tokens)


P = TypeVar("P", bound="Pretrained")


class Pretrained:
    """A kind of model — embedder, cross-encoder, a head to come — loaded along the one path: the
    kind says what it runs (`runs`) and assembles itself from a plan (`from_plan`);
    `from_pretrained` is every kind's."""

    runs: ClassVar[Runs]

    def __getstate__(self) -> NoReturn:
        # Its session's model lives in ONNX Runtime's (or OpenVINO's) memory, which no pickle
        # carries; their own error names the session's class, not what to do.
        name = type(self).__name__
        article = "an" if name[0] in "AEIOU" else "a"
        raise TypeError(
            f"{article} {name} cannot be pickled (its model lives in the runtime's memory): "
            f"load one in each process with {name}.from_pretrained, e.g. in a multiprocessing "
            "pool's initializer"
        )

    def __copy__(self) -> Self:
        # copy.copy would ask __getstate__; a shallow copy shares the session, which is fine
        # (Engine's lane and bulk engines are made this way).
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        return other

    @classmethod
    def from_pretrained(
        cls,
        spec: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        options: LoadOptions | None = None,
        **changes: Any,
    ) -> Self:
        """Load a model of this kind from a folder, a catalog name or a hub repo id (downloaded
        or compiled on first use).

        How it loads is `options` (a LoadOptions) and/or LoadOptions' fields as keyword
        arguments: `providers`, `intra_op_threads`, `inter_op_threads`, `precision`, `quantize`,
        `runtime`, `compile`, `max_batch_tokens`, `tokenizer_mode`, `tokenizer`, `name`, `max_length`. The
        precisions and runtimes the kind runs are its `runs`.
        """
        return cls.from_plan(plan_load(spec, LoadOptions.of(options, **changes), cls.runs))

    @classmethod
    def from_plan(cls, plan: LoadPlan) -> Self:
        """The model from a plan's files, precision and runtime: the kind reads its config,
        opens its `graph` in a session (runtime.backends) and assembles itself."""
        raise NotImplementedError(f"{cls.__name__} does not say how it loads")

    @classmethod
    def graph(cls, plan: LoadPlan) -> Path:
        """The graph file the kind opens for `plan`, built on first use (compiled, quantized or
        converted). Each kind decides it here and nowhere else: `from_plan` opens it, and `pull`
        and `serve` build it before any model loads (kinds.build_graph), so that a worker finds
        the very file built."""
        raise NotImplementedError(f"{cls.__name__} does not say which graph it loads")


def plan_load(
    spec: str | os.PathLike[str], options: LoadOptions, runs: Runs, *, here: bool = True
) -> LoadPlan:
    """Choose how to run `spec` as a kind that runs `runs`, then find its files.

    On CUDA, a kind with a `cuda_precision` runs through IOBinding (CUDA_BOUND) at that precision
    unless one is given, when the runtime asked for is ONNX Runtime's (or left to choose);
    elsewhere the runtime is the one asked for, or the faster one for the precision here. The
    precision is `choose_precision`'s. `here`: the model is to run on this machine, whose
    providers are checked (a GPU one needs a device); `pull` plans for the providers' machine,
    perhaps another (deploy/Dockerfile.cuda prepares the fp16 graph without a GPU).
    """
    from embedserve.models import resolve_model_dir
    from embedserve.runtime.backends import check_here, choose_runtime

    check_here(options.providers if here else None)
    bound = cuda_bound(options, runs)
    chosen = choose_precision(options, runs)
    runtime = options.runtime
    if chosen.name not in runs.precisions or runtime not in (None, "auto", *runs.runtimes):
        raise ValueError(
            f"{runs.kind} run {' or '.join(runs.precisions)} on {' or '.join(runs.runtimes)}, "
            f"not {chosen.name!r} on {runtime!r}"
        )
    if bound:
        if "onnxruntime" not in chosen.runtimes:  # bf16 is OpenVINO's, on a CPU
            raise ValueError(
                f"precision {chosen.name!r} runs on {' or '.join(chosen.runtimes)}, not on "
                "CUDA: use fp16 or fp32 there"
            )
        runtime_name = CUDA_BOUND
    else:
        if runtime in (None, "auto") and len(runs.runtimes) == 1:
            runtime = runs.runtimes[0]  # "auto" among one runtime
        runtime_name = choose_runtime(runtime, chosen, options.providers)
    model_dir = resolve_model_dir(spec, compile=options.compile)
    tokenizer = options.tokenizer
    config_dir = resolve_model_dir(tokenizer) if tokenizer is not None else model_dir
    return LoadPlan(
        model_dir=model_dir,
        config_dir=config_dir,
        name=options.name or display_name(spec, model_dir),
        precision=chosen,
        runtime=runtime_name,
        options=options,
    )


def cuda_bound(options: LoadSettings, runs: Runs) -> bool:
    """Whether a kind that runs `runs` runs on CUDA through IOBinding (CUDA_BOUND) under
    `options`: it has a CUDA precision, the runtime asked for is ONNX Runtime's (or left to
    choose) and the providers put the model on CUDA."""
    if runs.cuda_precision is None or options.runtime not in (None, "auto", "onnxruntime"):
        return False
    from embedserve.runtime.cuda import on_gpu

    return on_gpu(options.providers)


def choose_precision(options: LoadSettings, runs: Runs) -> Precision:
    """The precision a kind that runs `runs` runs at under `options`: the one asked for; unset,
    the kind's CUDA precision where it runs CUDA-bound (fp16 for embedders), else fp32; "auto",
    that CUDA precision too where it runs CUDA-bound, else this CPU's rule among the kind's
    precisions. The one rule: `plan_load` follows it, and embed-file, which records the
    precision in its manifest before any model loads."""
    asked = options.precision
    bound = cuda_bound(options, runs)
    if asked == AUTO:
        asked = None if bound else this_cpus_precision(runs.precisions)
    if asked is None and bound:
        asked = runs.cuda_precision
    return get_precision(asked)


def display_name(spec: str | os.PathLike[str], model_dir: Path) -> str:
    """The catalog's name for `spec`, a folder's own name, or the spec as given (a repo id)."""
    from embedserve.models import find_entry

    entry = find_entry(str(spec))
    if entry is not None:
        return entry.name
    return model_dir.name if Path(spec).expanduser().is_dir() else str(spec)
