"""Command line: ``hpcvmc run | measure | export | validate | keys | inspect | exact | plot |
attention | reference | transition``.

Exit codes: 0 success, 1 an unexpected failure (under MPI the whole job is aborted), 2 bad input
(one line on stderr naming the key or file; nothing existing is touched; also a run folder in
use by another run), 3 a run stopped on a non-finite energy, 74 a file could not be written (one
line naming it), 75 a run stopped by a signal after writing a checkpoint.
Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from hpcvmc import api, registry
from hpcvmc.version import __version__
from hpcvmc.config import Config, InputError, check_ranks, load, load_system, loads
from hpcvmc.outputs import EXIT_IO, OutputError, refuse_existing, writing

EXIT_INPUT = 2


def _load(args: argparse.Namespace) -> Config:
    return load(args.input, overrides=args.set)


def cmd_run(args: argparse.Namespace) -> int:
    """Run or resume the optimization of an input file."""
    from hpcvmc.signals import StopFlag

    stop = StopFlag().install()  # first: a signal during start-up is recorded, not fatal
    return api.run(_load(args), restart=args.restart, progress_every=args.every, stop=stop)


def cmd_measure(args: argparse.Namespace) -> int:
    """Final measurement of the newest checkpoint of a run folder (stopped early or running), or
    of an exported state (fresh chains, the result in --out)."""
    from hpcvmc.export import is_exported

    path = Path(args.run_dir)
    if path.is_file() and is_exported(path):
        return _measure_exported(args, path)
    if args.out is not None:
        raise InputError(f"--out: only for an exported state; {path} is measured in place")
    saved = path / "input.toml"
    if not saved.is_file():
        raise InputError(f"{path}: not an hpcvmc run folder (no input.toml) nor an exported state")
    overrides = [f"run.output={json.dumps(str(path))}", *args.set]
    if args.steps is not None:
        overrides.append(f"run.measure_steps={args.steps}")
    config = load(saved, overrides=overrides)
    if config.run.measure_steps == 0:
        raise InputError(f"{saved}: run.measure_steps = 0; give the number with --steps")
    comm = api.init(config)
    from hpcvmc.build import build
    from hpcvmc.driver import measure_newest
    from hpcvmc.progress import Progress

    return measure_newest(build(config, comm), Progress(0, comm.is_root).message)


def _measure_exported(args: argparse.Namespace, path: Path) -> int:
    """Measure an exported state with its stored input (plus --set); results in --out
    (default runs/measure/<file stem>), which must not be a run folder."""
    from hpcvmc import checkpoint as ckpt
    from hpcvmc.export import read

    try:
        state = read(path)
    except ckpt.CheckpointError as exc:
        raise InputError(str(exc)) from None
    out = Path(args.out) if args.out is not None else Path("runs/measure") / path.stem
    if ckpt.checkpoint_dir(out).exists():
        raise InputError(f"--out: {out} holds a run (checkpoints); choose another folder")
    overrides = [*args.set, f"run.output={json.dumps(str(out))}", 'run.init_params=""']
    if args.steps is not None:
        overrides.append(f"run.measure_steps={args.steps}")
    config = loads(state.input_toml, overrides=overrides, source=str(path))
    if config.run.measure_steps == 0:
        raise InputError(f"{path}: run.measure_steps = 0; give the number with --steps")
    comm = api.init(config)
    from hpcvmc.build import build
    from hpcvmc.driver import INPUT_FILE, measure_exported
    from hpcvmc.progress import Progress

    if comm.is_root:
        out.mkdir(parents=True, exist_ok=True)
        (out / INPUT_FILE).write_text(config.text)
    measure_exported(build(config, comm), path, Progress(0, comm.is_root).message)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the input and the trained parameters of a run folder's newest checkpoint (or
    rewrite an exported state of an older format version in this one)."""
    from hpcvmc.export import export

    out, state = export(args.source, args.out, force=args.force,
                        warn=lambda line: print(line, file=sys.stderr))
    final = (f"; final {state.attrs['final_summary']}" if "final_summary" in state.attrs
             else "; no final measurement of this step")
    print(f"wrote {out}: step {state.step}, {state.attrs['n_params']} parameters, "
          f"{out.stat().st_size} bytes{final}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check an input file without running it: keys, values, rank count, the moire basis and
    the memory of a step (against this machine's memory / --ranks, or HPCVMC_MEMORY)."""
    from hpcvmc import resources

    config = _load(args)
    check_ranks(config, args.ranks)
    resources.check_before_build(config, args.ranks, args.ranks)
    api.init(platform="cpu")
    estimate = resources.check_network(config, args.ranks, args.ranks)
    print(f"{args.input}: valid (one step needs about {resources.gib(estimate)} per rank "
          f"on {args.ranks} rank(s))")
    return 0


def _exact_energy(system: Any, allow_known: bool) -> tuple[float, str]:
    """(energy, source) from the solver the system config names in ``exact_solver``
    ("module:function", called as ``function(system, allow_known)``).

    Raises:
        InputError: the system has no exact solver, or the solver refuses (e.g. too large).
    """
    spec = getattr(system, "exact_solver", None)
    if spec is None:
        raise InputError(f"system.type = {system.type!r} has no exact solver (for moire "
                         "electrons: hpcvmc reference)")
    return registry.load_object(spec, "system.exact_solver")(system, allow_known)


def cmd_exact(args: argparse.Namespace) -> int:
    """Exact ground-state energy of the input's system (the input needs only [system])."""
    system = load_system(args.input, overrides=args.set)
    energy, source = _exact_energy(system, args.known)
    n = system.n_sites
    result = {"energy": energy, "energy_per_site": energy / n, "n_sites": n, "source": source}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"E0 = {energy:.8f} (per site {energy / n:.8f}) [{source}]")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """The input reference of a component type (built-in or plug-in "module:Name"), or the list
    of built-in types per section."""
    from hpcvmc.config import component_reference

    if args.type is None:
        for section in registry.SECTIONS:
            print(f"[{section}] type = " + ", ".join(map(repr, registry.builtin_names(section))))
        print("plug-ins: type = \"module:Name\" (hpcvmc keys module:Name shows their keys)")
        return 0
    if registry.is_plugin(args.type):
        found = registry.load_object(args.type, "TYPE")
        if not isinstance(found, registry.Component):
            raise InputError(f"hpcvmc keys {args.type}: not an hpcvmc.registry.Component")
        components = [found]
    else:
        components = [registry.lookup(section, args.type) for section in registry.SECTIONS
                      if args.type in registry.builtin_names(section)]
    if not components:
        raise InputError(f"hpcvmc keys {args.type}: no component of that type (hpcvmc keys "
                         "lists them)")
    print("\n".join(component_reference(c.section, args.type, c.config) for c in components))
    return 0


def _summary(path: Path) -> dict[str, Any]:
    """The newest state of a run folder or of one checkpoint file."""
    from hpcvmc import checkpoint as ckpt
    from hpcvmc.measure import read_final

    try:
        if path.is_dir():
            files = ckpt.list_checkpoints(path)
            found = ckpt.newest_usable(path, lambda snap, _: snap,
                                       lambda m: print(m, file=sys.stderr))
            if found is None:
                raise InputError(f"{path}: no valid checkpoint in {ckpt.checkpoint_dir(path)}")
            used, snap = found
        elif path.is_file():
            files = [path]
            used, snap = path, ckpt.read(path)
        else:
            raise InputError(f"{path}: no such run folder or checkpoint")
    except ckpt.CheckpointError as exc:
        raise InputError(str(exc)) from None
    config = loads(snap.input_toml, source=str(path))
    n_params = sum(int(v.size) for v in snap.params.values())
    history = snap.history
    energy = None
    if len(history.get("energy", [])):
        energy = {k: float(history[src][-1]) for k, src in
                  (("mean", "energy"), ("error", "error"), ("variance", "variance"))}
    return {
        "step": snap.step, "n_ranks": snap.n_ranks, "n_params": n_params,
        "n_sites": getattr(config.system, "n_sites", None), "energy": energy,
        "history_length": len(history.get("energy", [])), "slurm_job_id": snap.slurm_job_id,
        "system": config.to_dict()["system"], "model": config.to_dict()["model"],
        "checkpoints": [str(f) for f in files], "checkpoint": str(used),
        "final": read_final(path) if path.is_dir() else None,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    """Show the newest state of a run folder or checkpoint."""
    info = _summary(Path(args.path))
    if args.json:
        print(json.dumps(info))
        return 0
    e = info["energy"]
    print(f"step {info['step']} (history {info['history_length']} rows), written by "
          f"{info['n_ranks']} rank(s)")
    print(f"system {info['system']}")
    print(f"model  {info['model']}: {info['n_params']} parameters")
    if e:
        print(f"energy {e['mean']:.8f} +- {e['error']:.2e}, variance {e['variance']:.4g} "
              "(last step)")
    if info["final"]:
        f = info["final"]
        print(f"final  {f['summary']} (step {f['step']}, {f['n_samples']} samples)")
    print("checkpoints: " + ", ".join(Path(c).name for c in info["checkpoints"]))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """PNG of energy vs step (with the exact energy when known)."""
    from hpcvmc.observables import OBSERVABLES_FILE, plot_observables
    from hpcvmc.plotting import plot_energy, plot_reference_density

    run_dir = Path(args.run_dir)
    refuse_existing(args.out, args.force)
    if run_dir.suffix == ".json":  # a Hartree-Fock reference: its charge density
        try:
            result = json.loads(run_dir.read_text())
            density_ok = "density" in result and "state" in result
        except (OSError, ValueError):
            density_ok = False
        if not density_ok:
            raise InputError(f"{run_dir}: not a Hartree-Fock result of hpcvmc reference hf")
        out = Path(args.out) if args.out else run_dir.with_suffix(".png")
        with writing(out):
            plot_reference_density(result, out)
        print(f"wrote {out}")
        return 0
    info = _summary(run_dir)
    exact = None
    config = load(run_dir / "input.toml") if (run_dir / "input.toml").is_file() else None
    if config is not None and getattr(config.system, "exact_solver", None) is not None:
        try:
            exact, _ = _exact_energy(config.system, allow_known=True)
        except InputError:
            exact = None
    out = Path(args.out) if args.out else run_dir / "energy.png"
    with writing(out):
        plot_energy(run_dir, out, exact=exact, title=f"{info['system']}  {info['model']}")
    print(f"wrote {out}")
    if (run_dir / OBSERVABLES_FILE).is_file():  # moire runs with a final measurement
        with writing(run_dir):
            for path in plot_observables(run_dir):
                print(f"wrote {path}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    """Attention maps of a ViT run and their input-dependence measure per layer and head."""
    from hpcvmc import checkpoint as ckpt
    from hpcvmc.analysis.attention import attention_summary, plot_attention, to_jsonable

    run_dir = Path(args.run_dir)
    refuse_existing(args.png, args.force)
    info = _summary(run_dir)  # validates the folder; raises InputError with its name
    config = loads(ckpt.read(info["checkpoint"]).input_toml, source=str(run_dir))
    if config.model.type != "vit":
        raise InputError(f"{run_dir}: model.type = {config.model.type!r} has no attention maps")
    comm = api.init(config)
    from hpcvmc.analysis.sampling import sample_from_checkpoint

    setup, params, x = sample_from_checkpoint(config, comm, Path(info["checkpoint"]),
                                              args.samples)
    summary = attention_summary(setup.model, params, x)
    if args.png:
        with writing(args.png):
            plot_attention(summary, args.png)
    if args.json:
        print(json.dumps(to_jsonable(summary)))
        return 0
    print(f"{config.model.attention} attention, {summary['n_samples']} samples, step {info['step']}")
    print("input dependence D = mean_ij std_s(alpha_ij) / mean_ij |mean_s alpha_ij|")
    for layer, row in enumerate(summary["D"]):
        print(f"  layer {layer}: " + "  ".join(f"head {h}: {d:.3e}" for h, d in enumerate(row)))
    if args.png:
        print(f"wrote {args.png}")
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    """Hartree-Fock or band-projected ED of the input's moire system; prints and stores JSON.

    The input needs only [system]; the default output is ``<run.output>_<kind>.json``, with
    run.output's default when the file has no [run]."""
    from hpcvmc.config import RunConfig

    if args.kind not in ("hf", "bped"):
        raise InputError(f"hpcvmc reference: unknown kind {args.kind!r} (hf or bped)")
    system = load_system(args.input, overrides=args.set)
    if "moire" not in system.capabilities:
        raise InputError(f"system.type = {system.type!r}: hpcvmc reference is for "
                         "moire electrons (use hpcvmc exact for lattices)")
    from hpcvmc.systems.moire_lattice import MoireParameters

    params = MoireParameters.from_config(system)
    if args.out:
        out = Path(args.out)
    else:
        try:  # a whole input was validated by load_system already; a partial one has no [run]
            run_output = _load(args).run.output
        except InputError:
            run_output = RunConfig().output
        out = Path(f"{run_output}_{args.kind}.json")
    refuse_existing(out, args.force)
    if args.kind == "hf":
        from hpcvmc.reference.hf_search import SearchSettings, run_hf

        if args.random < 0:
            raise InputError(f"--random {args.random}: must be >= 0")
        if args.refine is not None and (args.refine < 1 or args.screen_q_max is None):
            raise InputError(f"--refine {args.refine}: needs --screen-q-max and a count >= 1")
        settings = SearchSettings(n_random=args.random, screen_q_max=args.screen_q_max,
                                  n_refine=args.refine)
        result = run_hf(params, settings, log=lambda line: print(line, flush=True))
    else:
        from hpcvmc.reference.bped import MemoryBudgetError, run_bped

        if args.bands < 1:
            raise InputError(f"--bands {args.bands}: need at least one band")
        try:
            sectors = None if args.sectors is None else [
                int(s) for s in args.sectors.split(",") if s.strip()]
        except ValueError:
            raise InputError(f"--sectors {args.sectors!r}: give comma-separated momentum "
                             "indices, e.g. 0,3") from None
        if sectors is not None and any(not 0 <= s < params.n_sites for s in sectors):
            raise InputError(f"--sectors {args.sectors!r}: momentum indices lie in "
                             f"0..{params.n_sites - 1}")
        budget = None if args.max_memory_gb is None else args.max_memory_gb * 1e9
        try:
            result = run_bped(params, args.bands, sectors=sectors, max_memory_bytes=budget)
        except MemoryBudgetError as exc:
            raise InputError(f"{args.input}: {exc}") from None
        if result["cut_degenerate_shells"]:
            print(f"hpcvmc: warning: {args.bands} bands cut a degenerate shell (band "
                  f"{args.bands + 1} degenerate with band {args.bands}) at k-point indices "
                  f"{result['cut_degenerate_shells']}; the energy is still an upper bound",
                  file=sys.stderr)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result))
    n = params.n_electrons
    print(f"{result['method']}: {n} electrons on {params.n_sites} sites")
    print(f"E = {result['energy_per_electron_meV']:.8f} meV per electron "
          f"({result['energy_per_electron_E0']:.10f} E0 per electron; total "
          f"{result['energy_E0']:.10f} E0 = {result['energy_meV']:.6f} meV)")
    if args.kind == "hf":
        state = result["state"]
        print(f"state: {state['classification']} (from the {state['guess']} guess), "
              f"sublattice charges {[round(c, 3) for c in state['sublattice_charges']]}")
        print(f"{len(result['solutions'])} distinct solutions from {len(result['guesses'])} "
              f"starts (meV per electron, sqrt3 sublattice charges, Fock gap, starts):")
        for row in result["solutions"]:
            print(f"  {row['energy_per_electron_meV']:.6f} "
                  f"{'converged' if row['converged'] else 'NOT converged'} "
                  f"{[round(c, 3) for c in row['sublattice_charges']]} {row['classification']} "
                  f"(site contrast {row['site_contrast']:.3f}), "
                  f"gap {row['fock_gap_meV']:.3f} meV, {len(row['guesses'])} "
                  f"({', '.join(row['guesses'][:4])}{', ...' if len(row['guesses']) > 4 else ''})")
    else:
        for sector in result["sectors"]:
            print(f"  sector {sector['index']:>3} ({sector['dimension']} states): "
                  f"{sector['energy_per_electron_meV']:.8f} meV per electron "
                  f"({sector['wall_s']:.1f} s)")
        print(f"{result['n_bands']} bands: lowest sector {result['ground_sector']}, "
              f"wall {result['wall_s']:.1f} s, peak memory {result['peak_rss_gb']:.2f} GB "
              f"(estimated {result['memory_estimate_gb']:.2f} GB)")
    print(f"wrote {out}")
    return 0


def cmd_transition(args: argparse.Namespace) -> int:
    """Order parameters of the liquid -> Wigner-crystal transition along an epsilon sweep."""
    from hpcvmc.analysis.transition import format_table, plot_transition, transition_table

    refuse_existing(args.png, args.force)
    rows, observables = transition_table(args.run_dirs)
    if args.png:
        with writing(args.png):
            plot_transition(rows, observables, args.png)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(format_table(rows))
    if args.png:
        print(f"wrote {args.png}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: ``hpcvmc: error: ...``, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(" ".join(message.split()))


def _count(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hpcvmc", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"hpcvmc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_input(name: str, help_text: str, *before: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_text)
        for positional in before:
            q.add_argument(positional)
        q.add_argument("input", help="TOML input file")
        q.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a key (validated like the file); repeatable")
        return q

    q = with_input("run", "run or resume a VMC optimization")
    q.add_argument("--restart", metavar="CKPT.h5", help="start from this checkpoint")
    q.add_argument("--every", type=_count, default=1, help="batch mode: print every N steps")
    q.set_defaults(func=cmd_run)
    q = sub.add_parser("measure", help="final measurement of a run folder's newest checkpoint "
                       "or of an exported state")
    q.add_argument("run_dir", metavar="RUN_DIR|STATE.h5")
    q.add_argument("--steps", type=_count, help="sampler steps (default: the run's measure_steps)")
    q.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a key of the stored input (sampler, run, numerical keys)")
    q.add_argument("--out", metavar="DIR", help="exported state: folder of final.json "
                   "(default runs/measure/<file stem>)")
    q.set_defaults(func=cmd_measure)
    q = sub.add_parser("export", help="input and trained parameters of a run folder's newest "
                       "checkpoint, as a small HDF5 file")
    q.add_argument("source", metavar="RUN_DIR", help="a run folder, or an exported state of an "
                   "older format version to rewrite in this one")
    q.add_argument("out", metavar="OUT.h5")
    q.add_argument("--force", action="store_true", help="overwrite OUT.h5 if it exists")
    q.set_defaults(func=cmd_export)
    q = with_input("validate", "check an input file")
    q.add_argument("--ranks", type=_count, default=1, help="check for this many MPI ranks")
    q.set_defaults(func=cmd_validate)
    q = with_input("exact", "exact ground-state energy (Lanczos) of the input's lattice")
    q.add_argument("--known", action="store_true", help="allow published values (6 x 6)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_exact)
    q = sub.add_parser("keys", help="input keys of a component type (built-in or module:Name), "
                       "or the list of types")
    q.add_argument("type", nargs="?", metavar="TYPE")
    q.set_defaults(func=cmd_keys)
    q = sub.add_parser("inspect", help="show a run folder or checkpoint")
    q.add_argument("path")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_inspect)
    q = sub.add_parser("plot", help="PNG of a run (energy vs step) or of an HF result's density")
    q.add_argument("run_dir", help="run folder, or the JSON of hpcvmc reference hf")
    q.add_argument("--out", help="PNG file (default RUN_DIR/energy.png)")
    q.add_argument("--force", action="store_true", help="replace an existing --out file")
    q.set_defaults(func=cmd_plot)
    q = with_input("reference", "Hartree-Fock (hf) or band-projected ED (bped) of a moire input",
                   "kind")
    q.add_argument("--out", help="JSON file (default: <run.output>_<kind>.json)")
    q.add_argument("--force", action="store_true", help="replace an existing output file")
    q.add_argument("--random", type=int, default=6,
                   help="hf: seeds of each random start family (random wells, random orbitals)")
    q.add_argument("--screen-q-max", type=float,
                   help="hf: search all starts in this smaller basis first, refine the distinct "
                        "solutions in the full one")
    q.add_argument("--refine", type=int,
                   help="hf: with --screen-q-max, refine only this many lowest solutions")
    q.add_argument("--bands", type=int, default=1, help="bped: number of lowest bands kept")
    q.add_argument("--sectors", help="bped: total-momentum indices to solve, e.g. 0,3 (all)")
    q.add_argument("--max-memory-gb", type=float,
                   help="bped: memory budget (default: the free physical memory)")
    q.set_defaults(func=cmd_reference)
    q = sub.add_parser("attention", help="attention maps of a ViT run (input dependence)")
    q.add_argument("run_dir")
    q.add_argument("--samples", type=_count, default=512, help="sampled configurations to use")
    q.add_argument("--json", action="store_true")
    q.add_argument("--png", metavar="FILE", help="write the maps (mean and spread) to FILE")
    q.add_argument("--force", action="store_true", help="replace an existing --png file")
    q.set_defaults(func=cmd_attention)
    q = sub.add_parser("transition",
                       help="order parameters (|rho_K|, S(K), sublattices) of a moire epsilon sweep")
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="measured moire run folders")
    q.add_argument("--json", action="store_true")
    q.add_argument("--png", metavar="FILE", help="order parameters vs epsilon and density maps")
    q.add_argument("--force", action="store_true", help="replace an existing --png file")
    q.set_defaults(func=cmd_transition)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpcvmc`` console script.

    Bad input (InputError, argparse errors included) prints one line and returns 2, a failed
    write (OutputError) one line and 74; under MPI only rank 0 prints.
    """
    try:
        args = _parser().parse_args(argv)
        return args.func(args)
    except InputError as exc:
        return _fail(exc, EXIT_INPUT)
    except OutputError as exc:
        return _fail(exc, EXIT_IO)


def _fail(exc: Exception, code: int) -> int:
    from hpcvmc.parallel import launcher_rank

    if launcher_rank() == 0:
        print("hpcvmc: error: " + " ".join(str(exc).split()), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
