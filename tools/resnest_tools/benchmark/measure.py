"""How the benchmark measures: timing in turns, peak memory, the machine's
matmul peak."""
import gc
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def interleaved_times(fns, device, warmup, repeat):
    """Median seconds of each of ``{name: fn}``, timed in turns.

    Each round runs every function once, so a slow spell of a shared machine
    slows all of them alike instead of whichever ran then.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory(fn, device):
    """Peak bytes that ``fn`` adds to what is allocated before it, or None
    where unknown.

    CUDA: ``max_memory_allocated``. CPU: the rise of the resident set, which
    tracks the live tensors only when glibc returns freed blocks at once
    (see :func:`cpu_peak_memory_in_child`).
    """
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    clear_refs = Path('/proc/self/clear_refs')
    if not clear_refs.exists():
        return None
    base = _proc_status('VmRSS')
    clear_refs.write_text('5')  # resets the resident-set peak (VmHWM) to now
    fn()
    return _proc_status('VmHWM') - base


def cpu_peak_memories(train_step, zero_grad):
    """The two CPU measures of a training step, in bytes (None off Linux):
    the second step's peak rise over the resident set before it, and the
    resident set's peak over both steps above the resident set before the
    first.

    The first step's one-off allocations (oneDNN's caches) are not the
    second's. The second measure is what ``top`` shows a CPU user for the
    step: under glibc's default allocator freed blocks stay in the heap,
    fragmented, so the resident set grows above the live tensors.
    """
    if not Path('/proc/self/clear_refs').exists():
        return None, None
    gc.collect()
    base = _proc_status('VmRSS')
    Path('/proc/self/clear_refs').write_text('5')  # VmHWM := VmRSS
    train_step()
    first = _proc_status('VmHWM')
    zero_grad()
    second = peak_memory(train_step, torch.device('cpu'))
    return second, max(first, _proc_status('VmHWM')) - base


def _proc_status(key):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024


def autocast(device, amp_dtype):
    """``torch.autocast`` to ``amp_dtype`` ('float16', 'bfloat16'), or none
    for None."""
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, amp_dtype))


def matmul_peak_gflops(device, amp_dtype, args):
    """GFLOP/s of a large square matrix product: the machine's practical
    peak."""
    n = 8192 if device.type == 'cuda' else 4096
    dtype = getattr(torch, amp_dtype or 'float32')
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = interleaved_times({'mm': lambda: a @ b}, device, args.warmup,
                                args.repeat)['mm']
    return 2 * n**3 / seconds / 1e9


def machine(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    name = platform.processor()
    if Path('/proc/cpuinfo').exists():
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                name = line.split(':', 1)[1].strip()
                break
    return f'{name}, {torch.get_num_threads()} threads'
