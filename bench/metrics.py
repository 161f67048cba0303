"""Does a Prometheus scrape cost the relay anything? (issue 15; docs/observability.md)

The same relay leg, in turns: plain ``stereo run``, then ``stereo run --metrics`` scraped once a
second by a thread of this harness for as long as the leg runs. Each scrape costs the master one
``snapshot`` control request; the exporter process does the rest. A leg is made longer than a
relay leg of the plan (COUNT messages per worker) so that it spans several scrapes.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator

from .peers.stereo_peer import Stereo
from .plan import BASE_PAYLOAD, BASE_WORKERS
from .relay import run_leg
from .report import rate
from .results import MetricsResult, RelayResult, median, median_round

SCRAPE_EVERY = 1.0
COUNT = 250_000  # per worker at W = 4, 64 B: several seconds of relaying
QUICK_COUNT = 50_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Scraper:
    """GET /metrics every SCRAPE_EVERY seconds until stopped; counts the answered scrapes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_EVERY):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as reply:
                    reply.read()
                self.scrapes += 1
            except OSError:
                pass  # the exporter is not up yet, or already gone

    @contextlib.contextmanager
    def running(self) -> Iterator[Scraper]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def _median(rows: list[RelayResult]) -> RelayResult:
    return median_round(rows, lambda row: row.rate if row.ok else -1.0)


def run_metrics(repeat: int, quick: bool, progress: Callable[[str], None]) -> list[MetricsResult]:
    count = QUICK_COUNT if quick else COUNT
    plain_rows: list[RelayResult] = []
    scraped_rows: list[RelayResult] = []
    scrapes: list[int] = []
    plain = Stereo()
    for _ in range(repeat):
        row = run_leg(plain, "relay", BASE_WORKERS, BASE_PAYLOAD, count)
        progress(f"metrics: plain -> {row.rate:,.0f} deliveries/s {row.error or ''}")
        plain_rows.append(row)
        port = _free_port()
        with tempfile.TemporaryDirectory(prefix="stereo-bench-metrics-") as work:
            extra = ["--metrics", f"127.0.0.1:{port}", "--control", f"{work}/control.sock"]
            scraped = Stereo("stereo+scrape", extra=extra)
            with Scraper(f"http://127.0.0.1:{port}/metrics").running() as scraper:
                row = run_leg(scraped, "relay", BASE_WORKERS, BASE_PAYLOAD, count)
        progress(
            f"metrics: scraped {scraper.scrapes} times -> {row.rate:,.0f} deliveries/s"
            f" {row.error or ''}"
        )
        scraped_rows.append(row)
        scrapes.append(scraper.scrapes)
    a, b = _median(plain_rows), _median(scraped_rows)
    return [
        MetricsResult(
            workers=BASE_WORKERS,
            payload=BASE_PAYLOAD,
            count=count,
            plain_rates=[round(r.rate) for r in plain_rows],
            scraped_rates=[round(r.rate) for r in scraped_rows],
            plain_cpu_pct=a.relay_cpu_pct,
            scraped_cpu_pct=b.relay_cpu_pct,
            scrapes=[int(s) for s in scrapes],
            errors=[r.error or r.note for r in (*plain_rows, *scraped_rows) if r.error or r.note],
        )
    ]


def metrics_table(rows: list[MetricsResult]) -> str:
    lines = [
        "| W | payload | msgs/worker | plain (median) | scraped 1/s (median) | scraped / plain"
        " | master CPU plain / scraped | scrapes per leg | rounds (plain; scraped) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        plain, scraped = median(r.plain_rates), median(r.scraped_rates)
        ratio = f"{scraped / plain:.3f}" if plain else "-"
        cpu = " / ".join(
            f"{c:.0f}%" if c is not None else "-" for c in (r.plain_cpu_pct, r.scraped_cpu_pct)
        )
        rounds = "; ".join(
            ", ".join(rate(x) for x in xs) for xs in (r.plain_rates, r.scraped_rates)
        )
        lines.append(
            f"| {r.workers} | {r.payload} B | {r.count:,} | {rate(plain)} | {rate(scraped)}"
            f" | {ratio} | {cpu} | {', '.join(map(str, r.scrapes))} | {rounds} |"
        )
    return "\n".join(lines)
