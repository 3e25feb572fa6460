"""The benchmark's outputs from the scored rows: results.csv, results.md and quality.png."""

import csv
import math
import os

COLUMNS = [
    ("case", "case", None),
    ("system", "system", None),
    ("net_label", "network", None),
    ("pesq_wb", "PESQ-WB", 2),
    ("stoi", "STOI", 3),
    ("plcmos", "PLCMOS", 2),
    ("dnsmos_ovrl", "DNSMOS", 2),
    ("delay_median_ms", "delay ms (median)", 0),
    ("delay_p95_ms", "delay ms (p95)", 0),
    ("concealed_pct", "concealed %", 1),
    ("lost_pct", "lost %", 1),
    ("fec_packets", "FEC pkts", 0),
    ("nack_count", "NACKs", 0),
    ("jitter_buffer_ms", "jitter buffer ms", 0),
    ("speaker_fraction_lost_pct", "speaker's RR loss %", 1),
    ("relay_up_loss_pct", "relay up %", 1),
    ("relay_down_loss_pct", "relay down %", 1),
    ("relay_p2p_loss_pct", "relay p2p %", 1),
    ("rtt_ms", "listener RTT ms", 0),
]


def cell(v, d):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if d is None:
        return str(v)
    return f"{v:.{d}f}"


def write(run_dir, run, baseline, rows):
    ok = [r for r in rows if "error" not in r]
    with open(os.path.join(run_dir, "results.csv"), "w", newline="") as f:
        keys = [k for k, _, _ in COLUMNS] + sorted({k for r in ok for k in r} - {k for k, _, _ in COLUMNS} - {"pesq_parts"})
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in ok:
            w.writerow(r)
    order = {}
    for r in ok:
        order.setdefault(r["net_label"], len(order))
    ok.sort(key=lambda r: (order[r["net_label"]], r["system"]))
    lines = [
        f"Run {run['date'][:16]} on commit {run['commit']}{' (dirty)' if run.get('dirty') else ''}; {run['machine']}; "
        f"{run.get('chromium', '')}{'; ' + run['firefox'] if run.get('firefox') else ''}; seed {run['seed']}, "
        f"{run['warmupS']:.0f} s warm-up, {run['measureS']:.0f} s measured per case.",
        "",
        f"Reference file itself: PLCMOS {baseline['plcmos']:.2f}, DNSMOS {baseline['dnsmos_ovrl']:.2f} (PESQ-WB of a perfect copy: 4.64).",
        "",
        "| " + " | ".join(h for k, h, _ in COLUMNS if k != "case") + " |",
        "|" + "---|" * (len(COLUMNS) - 1),
    ]
    for r in ok:
        lines.append("| " + " | ".join(cell(r.get(k), d) for k, _, d in COLUMNS if k != "case") + " |")
    for r in rows:
        if "error" in r:
            lines.append(f"\n{r['case']}: not measured ({r['error']})")
    if any(not r.get("delay_exact", True) for r in ok):
        lines.append("\nDelays with a Firefox listener come from two browsers' clocks (wall clock at frame 0): ± a few tens of ms.")
    with open(os.path.join(run_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(run_dir, run, ok, list(order))


def plot(run_dir, run, rows, nets):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # P2P first, then each choir build; Firefox listeners after their Chromium counterparts.
    systems = sorted({r["system"] for r in rows}, key=lambda s: ("→firefox" in s, not s.startswith("p2p"), s))
    panels = [
        ("pesq_wb", "PESQ-WB (higher is better)", (1, 4.7)),
        ("stoi", "STOI (intelligibility)", (0.5, 1.0)),
        ("plcmos", "PLCMOS (no reference)", (1, 5)),
        ("concealed_pct", "concealed samples %", None),
        ("delay_median_ms", "mouth-to-ear delay ms (median, bar to p95)", None),
        ("dnsmos_ovrl", "DNSMOS overall (no reference)", (1, 5)),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    width = 0.8 / max(1, len(systems))
    for ax, (key, title, ylim) in zip(axes.flat, panels):
        for i, s in enumerate(systems):
            xs, ys, err = [], [], []
            for j, n in enumerate(nets):
                r = next((x for x in rows if x["system"] == s and x["net_label"] == n), None)
                v = r.get(key) if r else None
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    continue
                xs.append(j + (i - (len(systems) - 1) / 2) * width)
                ys.append(v)
                err.append(max(0, r["delay_p95_ms"] - v) if key == "delay_median_ms" else 0)
            yerr = [[0] * len(err), err] if key == "delay_median_ms" else None
            ax.bar(xs, ys, width, label=s, yerr=yerr, capsize=2)
        ax.set_title(title)
        ax.set_xticks(range(len(nets)))
        ax.set_xticklabels(nets, rotation=30, ha="right", fontsize=8)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(
        f"Voice quality through the impairing relay (loss on both legs unless named; 30 ms per leg) — "
        f"commit {run['commit']}, {run['date'][:10]}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "quality.png"), dpi=90)
