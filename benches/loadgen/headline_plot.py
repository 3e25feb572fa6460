"""Plots `cargo bench --bench loadgen -- --target headline` output (its Markdown rows, as saved
in benches/results/cascade-headline.txt): CPU per node and link traffic per node pair against
participants. Usage: python3 headline_plot.py RESULTS.txt OUT.png (needs matplotlib; e.g. the
quality benchmark's venv, target/quality-venv/bin/python)."""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = []
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) != 8 or not cells[0].isdigit():
        continue
    cpu = [float(x) for x in cells[5].split("/")]
    kbit = [float(x) for x in cells[7].split()]
    rows.append((int(cells[0]), float(cells[3]), cpu, kbit))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
xs = [r[0] for r in rows]
for i, node in enumerate("abc"):
    ax1.plot(xs, [r[2][i] for r in rows], "o-", label=f"node {node}")
ax1.plot(xs, [sum(r[2]) for r in rows], "k--", label="all three (one core)")
ax1.set_xlabel("participants (rooms of 10, 2 speakers, over 3 regions)")
ax1.set_ylabel("CPU, % of one core")
ax1.set_ylim(0, 100)
ax1.legend()
ax1.set_title("CPU per node (loss 0.000 % at every step)" if all(r[1] == 0 for r in rows) else "CPU per node")
pairs = ["a→b", "a→c", "b→a", "b→c", "c→a", "c→b"]
for j, pair in enumerate(pairs):
    ax2.plot(xs, [r[3][j] / 1000 for r in rows], "o-", label=pair)
ax2.set_xlabel("participants")
ax2.set_ylabel("link traffic, Mbit/s")
ax2.set_title("Relayed traffic per ordered node pair")
ax2.legend(ncol=2)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
