"""``bench.md``: the Markdown tables of a :func:`~astrosleuth_astro.bench.run_bench` result."""

from __future__ import annotations


def markdown(result: dict) -> str:
    """The Markdown tables of a :func:`run_bench` result."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, bf16 {'yes' if m['bf16'] else 'no'}; "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}; "
        f"{result['settings']['repeats']} interleaved repetitions (medians); "
        f"bare network on one {result['settings']['bare_size']}^2 tensor; "
        f"star protection {'on' if result['settings']['protect_stars'] else 'off'}; "
        f"{result['seconds']} s in all.",
        "",
        "| model | backend | precision | input MP | tile/pad/batch | pipeline MP/min "
        "| bare MP/min | efficiency | naive MP/min | speed-up vs naive |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in result["configs"]:
        lines.append(
            f"| {c['model']} | {c['backend']} | {c['precision']} | {c['input_mp']:.2f} "
            f"| {c['tile']}/{c['pad']}/{c['batch_size']} | {c['pipeline_mp_per_min']:.2f} "
            f"| {c['bare_mp_per_min']:.2f} | {c['efficiency']:.2f} "
            f"| {c['naive_mp_per_min']:.2f} | {c['speedup_vs_naive']:.2f}x |"
        )
    peak = result.get("gemm_gflops")
    if peak:
        lines += [
            "",
            f"Roofline: useful convolution work per second (conv FLOPs of the network per "
            f"input pixel x input pixels / seconds; tile context not counted) against one "
            f"fp32 2048^2 torch matrix product on this machine, {peak:.0f} GFLOP/s (median "
            f"of the repetitions). sgemm / naive is the most any fp32 loop that does the "
            f"same arithmetic can gain over the naive loop.",
            "",
            "| model | backend | precision | conv GFLOP per input MP | pipeline GFLOP/s "
            "| bare GFLOP/s | naive GFLOP/s | naive / sgemm | sgemm / naive |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in result["configs"]:
            lines.append(
                f"| {c['model']} | {c['backend']} | {c['precision']} "
                f"| {c['conv_gflop_per_input_mp']:.1f} | {c['pipeline_gflops']:.0f} "
                f"| {c['bare_gflops']:.0f} | {c['naive_gflops']:.0f} "
                f"| {c['naive_gflops'] / peak:.2f} | {peak / c['naive_gflops']:.2f}x |"
            )
    lines += ["", "| model | bf16 / fp32 | onnx / torch fp32 |", "|---|---:|---:|"]
    for model, r in sorted(result["ratios"].items()):
        bf = f"{r['bf16_over_fp32']:.2f}x" if "bf16_over_fp32" in r else "n/a"
        ox = f"{r['onnx_over_torch_fp32']:.2f}x" if "onnx_over_torch_fp32" in r else "n/a"
        lines.append(f"| {model} | {bf} | {ox} |")
    stages = ("read", "stretch", "stars", "network", "tiling", "inverse", "write")
    lines += [
        "",
        "Time split (seconds, median run):",
        "",
        "| model | backend | precision | " + " | ".join(stages) + " | total "
        "| read+stretch+stars+write |",
        "|---|---|---|" + "---:|" * (len(stages) + 2),
    ]
    for c in result["configs"]:
        s = c["split_s"]
        cells = " | ".join(f"{s.get(k, 0.0):.2f}" for k in stages)
        total = c["runs_s"][
            sorted(range(len(c["runs_s"])), key=c["runs_s"].__getitem__)[
                (len(c["runs_s"]) - 1) // 2
            ]
        ]
        lines.append(
            f"| {c['model']} | {c['backend']} | {c['precision']} | {cells} | {total:.2f} "
            f"| {100 * c['io_stretch_stars_fraction']:.1f} % |"
        )
    if result.get("protect_stars_run"):
        r = result["protect_stars_run"]
        cells = ", ".join(f"{k} {v:.2f}" for k, v in r["split_s"].items())
        lines += [
            "",
            f"With --protect-stars ({r['config']}, one run, {r['input_mp']:.2f} MP input): "
            f"{r['seconds']:.2f} s in all; "
            f"split: {cells}.",
        ]
    if result.get("bf16_psnr"):
        lines += [
            "",
            "bf16 vs fp32 (PSNR against the noise-free truth of simulated fields, mean over "
            "fields; worst single field; and the lowest PSNR of the bf16 output against the "
            "fp32 output):",
            "",
            "| model | fields | PSNR fp32 (dB) | PSNR bf16 (dB) | difference (dB) "
            "| worst field abs difference (dB) | PSNR bf16 vs fp32 output (dB) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for model, p in result["bf16_psnr"].items():
            lines.append(
                f"| {model} | {p['fields']} x {p['field_lr_px']}^2 | {p['psnr_fp32_db']:.3f} "
                f"| {p['psnr_bf16_db']:.3f} | {p['delta_db']:+.4f} "
                f"| {p['max_abs_field_delta_db']:.4f} | {p['psnr_bf16_vs_fp32_db']:.1f} |"
            )
    if result.get("rss"):
        rss = result["rss"]
        lines += [
            "",
            f"Peak memory, 4x mono, model {rss['model']}, precision {rss['rows'][0]['precision']}"
            ", memory-mapped FITS output, each in a fresh process:",
            "",
            "| input MP | output MP | peak RSS excl. mapped files (MB) | VmHWM incl. "
            "mapped files (MB) | seconds |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in rss["rows"]:
            lines.append(
                f"| {r['input_mp']:.2f} | {r['output_mp']:.1f} | {r['peak_rss_anon_mb']:.0f} "
                f"| {r['ru_maxrss_mb']:.0f} | {r['seconds']:.1f} |"
            )
        if "growth_last_two" in rss:
            lines += [
                "",
                f"Growth between the last two sizes: {100 * rss['growth_last_two']:.1f} %.",
            ]
    return "\n".join(lines) + "\n"
