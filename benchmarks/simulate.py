"""Simulator throughput: how long N leads take, against the issue's budget of 60 s for 100,000.

Usage: python benchmarks/simulate.py [--leads 100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time

from leadtemp.simulate import simulate

BUDGET_SECONDS_PER_100K = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    timings = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        data = simulate(args.leads, seed=7)
        timings.append(time.perf_counter() - start)
    best = min(timings)
    budget = BUDGET_SECONDS_PER_100K * args.leads / 100_000
    print(f"leads={args.leads} interactions={len(data.interactions)} truth_rows={len(data.truth)}")
    print(f"seconds best={best:.1f} all={[round(t, 1) for t in timings]}")
    print(f"leads_per_s={args.leads / best:,.0f} events_per_s={len(data.interactions) / best:,.0f}")
    print(f"share_of_budget={best / budget:.2f} (budget {budget:.0f} s)")


if __name__ == "__main__":
    main()
