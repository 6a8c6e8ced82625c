"""The blocks ``report_pages.py`` writes: one function per block name, each returning the
markdown of that block from the files in ``benchmarks/results/``.

Tables reuse the renderer of the benchmark that measured them; the rest are short
summaries (a ratio, a range) computed here from the same ``.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = "docs"  # README links point into the docs folder


@functools.cache
def load(name: str) -> dict[str, Any]:
    """``benchmarks/results/<name>`` as read by the benchmark that wrote it."""
    path = RESULTS / name
    if path.name == "results.json":
        from nfe_report import read_json

        return read_json(path)
    return json.loads(path.read_text(encoding="utf-8"))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    from nfe_report import markdown_table

    return markdown_table(list(headers), [[str(cell) for cell in row] for row in rows])


def command_line(command: str, setting: str = "") -> str:
    text = f"Measured with `{command}`"
    return f"{text} ({setting})." if setting else f"{text}."


# ---- quality against the number of steps (nfe_quality.py) -------------------------------


def _nfe(name: str) -> dict[str, Any]:
    return load(f"{name}/results.json" if name != "." else "results.json")


def _psnr(results: dict[str, Any], key: str, nfe: int, kind: str = "average") -> float:
    return results["methods"][key]["runs"][str(nfe)]["psnr"][kind]


def nfe_setting(name: str = ".") -> str:
    meta = _nfe(name)["meta"]
    samples = int(meta.get("samples", 1))
    each = f"; every output is the mean of {samples} samples" if samples > 1 else ""
    draws = int(meta.get("draws", 1))
    return (f"{meta['num_images']} images: {meta['crop']} px centre crops of the three held-out"
            f" photos x {len(meta['kinds'])} degradations ({', '.join(meta['kinds'])})"
            + (f" x {draws} noise draws" if draws > 1 else "") + f"{each}; {meta['device']},"
            f" {meta['threads']} thread(s), {meta['total_seconds'] / 60:.1f} min in all.")


def nfe_targets(name: str = ".") -> str:
    from nfe_report import targets_summary

    text = targets_summary(_nfe(name)).split("\n\nInput vs output")[0]
    return "\n".join(line for line in text.splitlines() if line.startswith("- "))


def nfe_input_output(name: str = ".") -> str:
    from nfe_report import input_output_table

    return input_output_table(_nfe(name))


def nfe_shape() -> str:
    from nfe_report import shape_summary

    return "\n".join(line for line in shape_summary(_nfe(".")) if line.startswith("- "))


def nfe_average() -> str:
    from nfe_report import quality_table

    results = _nfe(".")
    methods = results["methods"]
    main = [k for k in ("posterior-irsde", "posterior-jump", "em-irsde", "em-jump",
                        "mrs-default", "x0-estimate") if k in methods]
    variants = [k for k in methods if k.startswith("mrs-") and k != "mrs-default"]
    return "\n\n".join([quality_table(results, main, "average"),
                        "MR Sampler variants (SDE/ODE, d = data, n = noise"
                        " parameterization, order):",
                        quality_table(results, variants, "average")])


def _one_vs_eight_rows() -> list[list[str]]:
    one, eight = _nfe("."), _nfe("nfe_k8")
    kinds = [k for k in eight["input"]["psnr"] if k != "average"]
    rows = []
    for key, runs in eight["methods"].items():
        if key not in one["methods"]:
            continue
        for nfe in sorted(map(int, runs["runs"]), reverse=True):
            if str(nfe) not in one["methods"][key]["runs"]:
                continue
            a = [_psnr(one, key, nfe, k) for k in kinds]
            b = [_psnr(eight, key, nfe, k) for k in kinds]
            rows.append([f"{runs['label']} @{nfe}", " / ".join(f"{x:.2f}" for x in a),
                         " / ".join(f"{x:.2f}" for x in b),
                         " / ".join(f"{y - x:+.2f}" for x, y in zip(a, b, strict=True))])
    return rows


def nfe_one_vs_eight() -> str:
    kinds = [k for k in _nfe("nfe_k8")["input"]["psnr"] if k != "average"]
    samples = int(_nfe("nfe_k8")["meta"]["samples"])
    return table(["method", f"one sample ({' / '.join(kinds)})", f"mean of {samples}", "gain"],
                 _one_vs_eight_rows())


def nfe_grids() -> str:
    """The shipped model's sweep beside the same weights on the log-SNR grid (v4/nfe_logsnr)."""
    rows = []
    for label, name in (("uniform in t (shipped)", "."), ("uniform in log-SNR", "v4/nfe_logsnr")):
        results = _nfe(name)
        rows.append([label] + [" / ".join(f"{_psnr(results, key, n):.2f}" for n in (10, 5, 100))
                               for key in ("mrs-default", "mrs-sde-data-2")])
    return table(["grid", "MRS default @10 / @5 / @100", "MRS-SDE-d-2 @10 / @5 / @100"], rows)


# ---- speed end to end (bench_restore.py) ------------------------------------------------


def _restore_rows(network: str, variant: str) -> dict[str, dict[str, Any]]:
    return {f"{r['method']}@{r['nfe']}": r for r in load("restore.json")["rows"]
            if r["network"] == network and r["variant"] == variant}


def restore_speed() -> str:
    data = load("restore.json")
    rows = []
    for network in data["networks"]:
        ours, original = _restore_rows(network, "fp32"), _restore_rows(network, "original")
        for key, row in ours.items():
            other = original.get(key, {})
            rows.append([network, key, f"{row['median_s']:.2f}",
                         f"{other['median_s']:.2f}" if other else "-",
                         f"{row['ratio_vs_original']:.2f}" if row["ratio_vs_original"] else "-",
                         f"{row['peak_mib']:.0f} / {other.get('peak_mib', 0):.0f}"])
    return table(["network", "method@NFE", "this pipeline s", "original code s",
                  "time vs original", "added peak RSS MiB (ours / original)"], rows)


def restore_networks() -> str:
    return "\n".join(f"- `{name}`: original loops on {about['original']}"
                     + "".join(f"; {note}" for note in about["notes"])
                     for name, about in load("restore.json")["networks"].items())


def restore_commands() -> str:
    return "\n".join(f"- `{env['command']}` ({env['device']}, {env['threads']} threads)"
                     for env in load("restore.json")["environments"])


def _speedup(network: str) -> tuple[float, float]:
    ours, original = _restore_rows(network, "fp32"), _restore_rows(network, "original")
    fast = ours["mrs@10"]["median_s"]
    return ours["posterior@100"]["median_s"] / fast, original["posterior@100"]["median_s"] / fast


def restore_speedups() -> str:
    lines = []
    for network in load("restore.json")["networks"]:
        own, original = _speedup(network)
        lines.append(f"- `{network}`: MR Sampler @10 is {own:.1f}x faster than posterior"
                     f" sampling @100 in this pipeline, {original:.1f}x faster than the"
                     " original posterior loop.")
    return "\n".join(lines)


def _ratio_range() -> tuple[float, float]:
    ratios = [r["ratio_vs_original"] for r in load("restore.json")["rows"]
              if r["variant"] == "fp32" and r["ratio_vs_original"] and r["network"] != "default"]
    return min(ratios), max(ratios)


def compile_table() -> str:
    from bench_restore import HEADER, format_row

    data = load("runs/compile.json")
    lines = [HEADER, *(format_row(row) for row in data["rows"])]
    return command_line(data["environment"]["command"]) + "\n\n" + "\n".join(lines)


# ---- memory and seams of tiling (bench_tiling.py) ----------------------------------------


def tiling_memory() -> str:
    data = load("tiling.json")
    rows = [[f"{r['size']} x {r['size']}", f"{r['tile']} / {r['overlap']}", r["tile_batch"],
             f"{r['peak_rss_mib']:.0f}", f"{r['rss_after_loading_mib']:.0f}",
             f"{r['seconds']:.0f} ({r['steps']})"] for r in data["memory"]]
    seams = [[f"{r['size']} x {r['size']}", f"{r['tile']} / {r['overlap']}",
              f"{r['psnr_vs_untiled_db']:.1f}", f"{r['seconds']:.1f} ({r['steps']})"]
             for r in data["seams"] if r.get("tile")]
    return "\n\n".join([
        table(["image", "tile / overlap", "tile batch", "peak RSS MiB",
               "RSS after loading MiB", "s (steps)"], rows),
        table(["image", "tile / overlap", "PSNR tiled vs untiled dB", "s (steps)"], seams),
        command_line(data["command"], f"{data['threads']} thread(s)"),
    ])


# ---- the default model (default_model_eval.py) -------------------------------------------


def default_model_quality() -> str:
    from default_model_eval import quality_table, setting

    result = load("default_model.json")
    return setting(result) + "\n\n" + "\n".join(quality_table(result))


def default_model_ensembles() -> str:
    from default_model_eval import ensemble_table, samples_of

    result = load("default_model.json")
    return "\n".join(ensemble_table(result, samples_of(result)))


def default_model_targets() -> str:
    from default_model_eval import targets_table

    return "\n".join(targets_table(load("default_model.json")))


def default_model_lowlight() -> str:
    from default_model_eval import lowlight_table

    return "\n".join(lowlight_table(load("default_model.json")))


def default_model_gains() -> str:
    from default_model_eval import samples_of

    result = load("default_model.json")
    k = samples_of(result)
    lines = []
    for kind in result["claimed"]:
        r, f = result["rows"][kind], result["rows"][kind]["faithful"]
        d = r.get("default_ensemble")
        default = ("" if d is None else f"; the default sampler's mean of {k} adds"
                   f" {d[f'mean_of_{k}'] - d['single']:+.1f} dB (calibration"
                   f" {d['error_over_std']:.2f})")
        lines.append(
            f"- **{kind}**: one sample gains {r['single'] - r['input']:+.1f} dB over the input"
            f" (x0 estimate {r['x0'] - r['input']:+.1f} dB, posterior@100"
            f" {r['posterior100'] - r['input']:+.1f} dB); the mean of {k} from the faithful"
            f" sampler (`solver_order=2`) adds {f[f'mean_of_{k}'] - f['single']:+.1f} dB over"
            f" its one sample (calibration {f['error_over_std']:.2f}; 1.06 where the spread"
            f" matches the error){default}.")
    return "\n".join(lines)


# ---- real photographs (real_photos.py) --------------------------------------------------


def real_photos(path: str = "real_photos.json") -> str:
    from real_photos import markdown

    return markdown(load(path))


def hue_reference(path: str = "hue_reference.json") -> str:
    from hue_reference import markdown

    return markdown(load(path)).rstrip("\n")


def x0_per_t() -> str:
    from x0_per_t import markdown

    return markdown(load("v4_candidate/x0_per_t.json")).rstrip("\n")


# ---- the v4 candidate's gains against training CPU-hours (training_curve.py) ---------------


def training_curve() -> str:
    from training_curve import markdown

    return markdown(load("v4/training_curve.json")).rstrip("\n")


# ---- which network per CPU-hour (arch_per_cpu_hour.py) -----------------------------------


def arch_table() -> str:
    from arch_per_cpu_hour import markdown

    data = load("arch_per_cpu_hour.json")
    return markdown(data["rows"], argparse.Namespace(**data["settings"]), data["command"])


# ---- printed-only measurements (recorded.json) ---------------------------------------------


def recorded(name: str) -> str:
    entry = load("recorded.json")[name]
    return table(entry["columns"], entry["rows"]) + "\n\n" + command_line(
        entry["command"], entry["setting"])


# ---- the paper-setting testbed model (nfe_quality.py on benchmarks/testbed_model) ---------


def testbed_targets() -> str:
    """Issue 24's targets on the testbed model (the lines that apply to the methods run),
    then where the PF-ODE itself ends up: the converged ODE against posterior@100."""
    results = _nfe("testbed")
    lines = [line for line in nfe_targets("testbed").splitlines() if "n/a" not in line]
    ode_100, post_100 = (_psnr(results, k, 100) for k in ("mrs-ode-data-2", "posterior-irsde"))
    x0 = _psnr(results, "x0-estimate", 1)
    lines += [f"- The PF-ODE solved to convergence (MRS-ODE-d-2 @100): {ode_100:.2f} dB, vs"
              f" posterior (IR-SDE) @100 {post_100:.2f} dB; the network's x0 estimate at t = T"
              f" (1 NFE): {x0:.2f} dB"]
    return "\n".join(lines)


def testbed_quality() -> str:
    """PSNR / SSIM of the PF-ODE solvers (MR Sampler ODE, MR UniPC) and posterior@100 on the
    testbed model, then their distance to the converged ODE solution."""
    from nfe_report import distance_table, ode_method_keys, quality_table

    results = _nfe("testbed")
    ode = ode_method_keys(results)
    mrs = [k for k in ode if k.startswith("mrs-ode-")]
    uni = [k for k in ode if k.startswith("unipc-")]
    other = [k for k in ("posterior-irsde", "x0-estimate") if k in results["methods"]]
    ref = results["meta"]["ode_reference"]
    return "\n\n".join([
        "PSNR / SSIM, MR Sampler ODE (d = data, n = noise parameterization, order) and"
        " posterior sampling:", quality_table(results, other + mrs, "average"),
        "MR UniPC (n = noise parameterization, else data; B(h); order; x = the exact single"
        " weight):",
        quality_table(results, uni, "average"),
        f"RMS distance (8-bit levels) to the converged ODE solution (MR Sampler ODE, data,"
        f" order 2, NFE {ref['nfe']}, same latents); smallest per row in bold:",
        distance_table(results, ode, "average"),
    ])


# ---- README headline ----------------------------------------------------------------------


def headline() -> str:
    own, _ = _speedup("default")
    low, high = _ratio_range()
    nfe = _nfe(".")
    post = _psnr(nfe, "posterior-irsde", 100)
    five, ten = _psnr(nfe, "mrs-default", 5), _psnr(nfe, "mrs-default", 10)
    memory = load("tiling.json")["memory"][0]
    gains = load("default_model.json")["rows"]
    bench = f"{DOCS}/benchmarks.md"
    rows = [
        ["Time per image, 10 MR Sampler steps vs 100 posterior steps (default model, 256 px,"
         " CPU)", f"{own:.1f}x less", f"[end-to-end speed]({bench}#end-to-end-speed)"],
        ["Time vs the original code, same network and NFE (IR-SDE, Refusion and DA-CLIP"
         " shapes)", f"{low:.2f}-{high:.2f}x", f"[against the original code]({bench}"
         "#end-to-end-speed)"],
        ["Steps for the quality of 100 posterior steps (average PSNR)",
         f"5 or 10 vs 100 ({five:.2f} / {ten:.2f} vs {post:.2f} dB)",
         f"[quality vs NFE]({bench}#quality-vs-nfe)"],
        [f"Peak memory, {memory['size']} x {memory['size']} image, tiles of {memory['tile']}",
         f"{memory['peak_rss_mib']:.0f} MiB", f"[tiling]({DOCS}/guide/tiling.md)"],
        ["Default model, one sample over its input (noise / low light)",
         f"{gains['noise']['single'] - gains['noise']['input']:+.1f} /"
         f" {gains['lowlight']['single'] - gains['lowlight']['input']:+.1f} dB",
         f"[the default model]({DOCS}/guide/models.md#the-default-model)"],
    ]
    return table(["", "measured", "details"], rows)


RENDERERS: dict[str, Callable[[], str]] = {
    "headline": headline,
    "nfe-setting": nfe_setting,
    "nfe-targets": nfe_targets,
    "nfe-input-output": nfe_input_output,
    "nfe-shape": nfe_shape,
    "nfe-average": nfe_average,
    "nfe-k8-setting": functools.partial(nfe_setting, "nfe_k8"),
    "nfe-k8-targets": functools.partial(nfe_targets, "nfe_k8"),
    "nfe-one-vs-eight": nfe_one_vs_eight,
    "testbed-setting": functools.partial(nfe_setting, "testbed"),
    "testbed-targets": testbed_targets,
    "testbed-quality": testbed_quality,
    "restore-speed": restore_speed,
    "restore-networks": restore_networks,
    "restore-commands": restore_commands,
    "restore-speedups": restore_speedups,
    "compile": compile_table,
    "tiling-memory": tiling_memory,
    "default-model-quality": default_model_quality,
    "default-model-ensembles": default_model_ensembles,
    "default-model-targets": default_model_targets,
    "default-model-lowlight": default_model_lowlight,
    "default-model-gains": default_model_gains,
    "real-photos": real_photos,
    "real-photos-forced": functools.partial(real_photos, "v4/real_photos.json"),
    "nfe-grids": nfe_grids,
    "hue-reference": hue_reference,
    "hue-reference-v3": functools.partial(hue_reference, "v3/hue_reference.json"),
    "hue-reference-stage2": functools.partial(hue_reference, "v4_stage2/hue_reference.json"),
    "hue-reference-stage3": functools.partial(hue_reference, "v4_stage3/hue_reference.json"),
    "hue-reference-candidate": functools.partial(hue_reference,
                                                 "v4_candidate/hue_reference.json"),
    "training-curve": training_curve,
    "x0-per-t": x0_per_t,
    "arch": arch_table,
    **{name.replace("_", "-"): functools.partial(recorded, name)
       for name in ("step_cost", "daclip_speed", "tile_size", "compile_pad", "ensemble_bundled")},
}
