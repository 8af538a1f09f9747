"""Turn a pytest-benchmark JSON into the markdown table of BENCHMARKS.md: median times of each
implementation, and ssd_fast's speed-up over torchvision and over the reference (same run).

    python benchmarks/report.py benchmarks/results/<date>-<machine>.json
"""
import json
import sys
from collections import defaultdict


def table(path):
    data = json.load(open(path))
    rows = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b["extra_info"]
        rows[(info["op"], info["size"], info["device"])][info["impl"]] = b["stats"]["median"]
    machine = data.get("machine_info", {})
    threads = {b["extra_info"].get("threads") for b in data["benchmarks"]}
    lines = [f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
             f"CPU threads: {', '.join(str(t) for t in sorted(threads, key=str))}; "
             f"{data.get('datetime', '')}", "",
             "| op | size | device | ssd_fast (ms) | torchvision (ms) | reference (ms) | "
             "vs torchvision | vs reference |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    def ms(t):
        return f"{t * 1e3:.3f}" if t else "-"
    def ratio(t, ours):
        return f"{t / ours:.1f}x" if t and ours else "-"
    for (op, size, device), r in sorted(rows.items()):
        ours = r.get("ssd_fast")
        lines.append(f"| {op} | {size} | {device} | {ms(ours)} | {ms(r.get('torchvision'))} | "
                     f"{ms(r.get('reference'))} | {ratio(r.get('torchvision'), ours)} | "
                     f"{ratio(r.get('reference'), ours)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1]))
