"""Benchmark of CUT3R streaming: per-frame latency (median, p95) and peak memory of `Cut3r.step()` over a
stream of N frames, with the memory reported at several points of the stream to show that it stays flat.

    python -m moonseg3r_ros.tools.bench_cut3r --config small --device cpu --frames 200 --height 384 --width 512

`--before REV` times the CUT3R code of git revision REV side by side in the same process (same weights, same
frames, steps alternating ABBA) and prints both; `--against-dtype D` does the same for the current code in
`--dtype` vs in D; `--profile` prints a torch.profiler table of one step.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # torch and the model load after the arguments are parsed (`--help` stays fast)
    import torch

    from moonseg3r_ros.core.cut3r import Cut3r, Cut3rConfig

DTYPES = ("float32", "bfloat16", "float16")  # torch dtype names


def random_model(config: Cut3rConfig, device: torch.device, seed: int = 0) -> Cut3r:
    """A randomly initialised model built without a slow CPU init: meta -> empty on device -> quick fill."""
    import torch

    from moonseg3r_ros.core.cut3r import Cut3r

    with torch.device("meta"):
        model = Cut3r(config)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 and name.endswith(".weight"):
                param.fill_(1.0)
            elif param.ndim == 1:
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=generator)
    return model.eval()


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize() / 2 ** 20
    except OSError:
        return float("nan")


def _memory_mib(device: torch.device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return _rss_mib()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="moonseg3r bench cut3r", description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("small", "full"), default="small",
                        help="small: the reference test configuration; full: the released 512 DPT model")
    parser.add_argument("--checkpoint", default="", help="optional checkpoint (else random weights)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="autocast dtype of encoder and decoders (heads stay float32)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: leave torch's default)")
    parser.add_argument("--attention", action="store_true", help="also recompute the last layer's state attention")
    parser.add_argument("--before", default="", metavar="REV",
                        help="also time the CUT3R code of git revision REV, alternating with the current one")
    parser.add_argument("--against-dtype", choices=sorted(DTYPES), default="",
                        help="time the current code in --dtype against itself in this dtype, alternating")
    parser.add_argument("--profile", action="store_true", help="print the top ops of one profiled step")
    args = parser.parse_args(argv)
    import torch

    from moonseg3r_ros.core.cut3r import Cut3rConfig, load_checkpoint
    from moonseg3r_ros.core.cut3r.checkpoint import CheckpointError
    from moonseg3r_ros.core.untrusted_files import RefusedFileError

    if args.height % 16 or args.width % 16:
        parser.error("--height and --width must be multiples of 16")
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    if args.against_dtype and (args.before or args.against_dtype == args.dtype):
        parser.error("--against-dtype needs another dtype than --dtype and no --before")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = Cut3rConfig.small_test() if args.config == "small" else Cut3rConfig.full_512()
    if args.checkpoint:
        try:
            model = load_checkpoint(args.checkpoint, config, device=device)
        except (CheckpointError, RefusedFileError, OSError, ValueError) as err:
            print(f"moonseg3r bench cut3r: error: {err}".splitlines()[0], file=sys.stderr)
            return 2
    else:
        model = random_model(config, device)
    amp = None if args.dtype == "float32" else getattr(torch, args.dtype)
    layers = [-1] if args.attention else None
    generator = torch.Generator(device=device).manual_seed(0)
    frames = [torch.rand(1, 3, args.height, args.width, device=device, generator=generator) * 2 - 1
              for _ in range(4)]

    def run(img: torch.Tensor) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.step(img, attention_layers=layers, amp_dtype=amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    if args.before or args.against_dtype:
        return side_by_side(model, frames, args, layers, amp)
    if args.profile:
        model.reset()
        print_profile(model, frames, args.warmup, layers, amp)
        return 0
    model.reset()
    for i in range(args.warmup):
        run(frames[i % 4])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    checkpoints = sorted({max(1, args.frames // 4), max(1, args.frames // 2), args.frames})
    latencies, memory = [], {}
    for i in range(args.frames):
        latencies.append(run(frames[i % 4]))
        if i + 1 in checkpoints:
            memory[i + 1] = _memory_mib(device)
    latencies_ms = sorted(1000 * t for t in latencies)
    p95 = latencies_ms[min(len(latencies_ms) - 1, int(round(0.95 * (len(latencies_ms) - 1))))]
    params = sum(p.numel() for p in model.parameters())
    kind = "peak CUDA allocated" if device.type == "cuda" else "process RSS"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"cut3r step(): config={args.config} ({params / 1e6:.1f} M params) device={name} dtype={args.dtype} "
          f"input={args.height}x{args.width} frames={args.frames} (+{args.warmup} warm-up)")
    print(f"latency ms/frame: median {statistics.median(latencies_ms):.2f}  p95 {p95:.2f}  "
          f"min {latencies_ms[0]:.2f}  max {latencies_ms[-1]:.2f}")
    print(f"{kind} MiB after frame: " + "  ".join(f"{n}: {m:.1f}" for n, m in memory.items()))
    values = list(memory.values())
    print(f"memory growth from frame {checkpoints[0]} to {checkpoints[-1]}: {values[-1] - values[0]:+.1f} MiB; "
          f"state {tuple(model.state_feat.shape)}, mem {tuple(model.mem.shape)}")
    return 0


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _timed_step(model, img: torch.Tensor, layers, amp) -> tuple[float, float, dict]:
    """(wall s, process CPU s, outputs) of one step (CUDA synchronised)."""
    import torch

    if img.device.type == "cuda":
        torch.cuda.synchronize(img.device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = model.step(img, attention_layers=layers, amp_dtype=amp)
    if img.device.type == "cuda":
        torch.cuda.synchronize(img.device)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _summary(name: str, walls: list[float], cpus: list[float]) -> str:
    ms = sorted(1000 * t for t in walls)
    return (f"{name}: wall ms/frame median {statistics.median(ms):.1f}  min {ms[0]:.1f}  max {ms[-1]:.1f}  "
            f"(spread {ms[-1] - ms[0]:.1f}); CPU ms/frame median {1000 * statistics.median(cpus):.1f}")


def compare(runs: dict, title: str, frames: list[torch.Tensor], args, layers) -> int:
    """runs: {"current": (model, amp), other: (model, amp)}. Alternate their steps (ABBA order) on the same
    frames; print every step, both summaries and the ratio."""
    names = list(runs)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    print(f"cut3r step() side by side: {title} config={args.config} device={args.device} "
          f"({torch_threads()} threads) input={args.height}x{args.width} frames={args.frames} each "
          f"(+{args.warmup} warm-up); {_load()}")
    worst = 0.0
    for m, _ in runs.values():
        m.reset()
    for i in range(args.warmup + args.frames):
        order = names[::-1] if i % 2 == 0 else names
        outs = {}
        for name in order:
            model, amp = runs[name]
            wall, cpu, outs[name] = _timed_step(model, frames[i % 4], layers, amp)
            if i >= args.warmup:
                times[name][0].append(wall)
                times[name][1].append(cpu)
        worst = max(worst, max((outs[names[0]][k].float() - outs[names[1]][k].float()).abs().max().item()
                               for k in ("pts3d_in_other_view", "conf", "camera_pose", "rgb")))
        print(f"  frame {i}{' (warm-up)' if i < args.warmup else ''}: "
              + "  ".join(f"{name} {1000 * times[name][0][-1]:.0f} ms" if i >= args.warmup else name
                          for name in order) + f"; {_load()}", flush=True)
    for name in names:
        print(_summary(name, *times[name]))
    ratio = statistics.median(times[names[0]][0]) / statistics.median(times[names[1]][0])
    print(f"{names[0]} / {names[1]} (median wall): {ratio:.3f}; max |output difference| {worst:.3g}; {_load()}")
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def side_by_side(model: Cut3r, frames: list[torch.Tensor], args, layers, amp) -> int:
    """--before REV: the current code vs REV's; --against-dtype D: the current code in --dtype vs in D."""
    import torch

    from moonseg3r_ros.core.cut3r import Cut3r
    from moonseg3r_ros.tools.cut3r_revision import model_of_revision

    if not args.before:
        with torch.device("meta"):
            twin = Cut3r(model.config)
        twin.load_state_dict(model.state_dict(), strict=True, assign=True)  # shares the weights
        other_amp = None if args.against_dtype == "float32" else getattr(torch, args.against_dtype)
        runs = {args.dtype: (model, amp), args.against_dtype: (twin.eval(), other_amp)}
        return compare(runs, f"current code, dtype {args.dtype} vs {args.against_dtype}", frames, args, layers)
    try:
        other = model_of_revision(args.before, model)
    except RuntimeError as err:
        print(f"moonseg3r bench cut3r: error: {err}", file=sys.stderr)
        return 2
    runs = {"current": (model, amp), "before": (other, amp)}
    title = f"current vs before={args.before} ({other.commit[:12]}) dtype={args.dtype}"
    return compare(runs, title, frames, args, layers)


def print_profile(model: Cut3r, frames: list[torch.Tensor], warmup: int, layers, amp) -> None:
    """Warm up, then print the ops of one profiled step by self CPU time, with their call counts."""
    from torch.profiler import ProfilerActivity, profile
    for i in range(max(1, warmup)):
        model.step(frames[i % 4], attention_layers=layers, amp_dtype=amp)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if frames[0].device.type == "cuda" else [])
    print(_load())
    with profile(activities=activities) as prof:
        wall, cpu, _ = _timed_step(model, frames[0], layers, amp)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    print(f"profiled step: wall {wall * 1000:.1f} ms, CPU {cpu * 1000:.1f} ms, {calls} aten calls; {_load()}")


if __name__ == "__main__":
    raise SystemExit(main())
