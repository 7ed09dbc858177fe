"""The benchmark's table: each model's best layout, and ratios to upstream."""

#: what the two memory columns measure
MEMORY_NOTE = (
    'train peak MiB: the training step\'s peak; on CUDA '
    'max_memory_allocated, on the CPU the resident set\'s rise with '
    'glibc\'s MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 64 KiB, '
    'about the live tensor bytes (what a GPU\'s caching allocator peaks at). '
    'train RSS MiB (CPU only): the resident set\'s peak rise over a first '
    'and a second step under glibc\'s default allocator, what a CPU user '
    'who sets nothing sees')


def best(results, key, higher_is_better=True):
    """The best value of ``key`` over layouts, and that layout."""
    valid = {k: r[key] for k, r in results.items() if r[key] is not None}
    if not valid:
        return None, None
    layout = (max if higher_is_better else min)(valid, key=valid.get)
    return valid[layout], layout


def ratio(a, b):
    return None if a is None or b is None else a / b


def print_table(report, peak, args):
    up = report['upstream mmdet']
    width = max(24, *map(len, report))
    head = (f"{'model':{width}s} {'GMACs':>6s} {'infer img/s':>16s} "
            f"{'train img/s':>16s} {'b1 latency ms':>18s} "
            f"{'train peak MiB':>18s} {'train RSS MiB':>18s} "
            f"{'GFLOP/s infer':>14s} "
            f"{'img/s x GMACs':>14s}")
    print(head + '\n' + '-' * len(head))
    for name, r in report.items():
        cells = []
        for key, fmt in (('infer_img_s', '{:7.2f}'),
                         ('train_img_s', '{:7.2f}'), ('latency_ms', '{:8.1f}'),
                         ('train_peak_mib', '{:8.0f}'), ('train_rss_mib',
                                                         '{:8.0f}')):
            if r[key] is None:
                cells.append(f"{'n/a':>16s}")
                continue
            rel = ratio(r[key], up[key])
            cells.append(
                fmt.format(r[key]) + f' {rel:4.2f}x' +
                (' cl' if r[key + '_layout'] == 'channels_last' else '   '))
        achieved = 2 * r['gmacs'] * r['infer_img_s']
        print(f"{name:{width}s} {r['gmacs']:6.2f} {cells[0]:>16s} "
              f"{cells[1]:>16s} {cells[2]:>18s} {cells[3]:>18s} "
              f"{cells[4]:>18s} "
              f"{achieved:6.0f} ({achieved / peak:3.0%}) "
              f"{r['infer_img_s'] * r['gmacs']:8.1f}")
    print('(ratios are to upstream mmdet; "cl" marks channels_last as the '
          'faster layout; '
          f'matmul peak {peak:.0f} GFLOP/s)')
    print(MEMORY_NOTE)
