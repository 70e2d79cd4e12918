"""Slack acknowledgement latency on its own: 50 concurrent signed `/backup list` with and without a backup.

    python bench/ack.py --size 300               # a 300 MB database, 3 rounds (a few minutes)
    python bench/ack.py --size 1000 --rounds 5   # the size bench/run.py measures at
    python bench/ack.py --size 300 --profile /tmp/ack   # also py-spy the bot during each burst

`backupbot run` (HTTP mode) runs in its own process, as in production, against the fake Slack Web API
(tests/fix_slack.py); the commands are sent from here, from a thread pool as wide as the burst, and each
latency is the time to the command's HTTP answer (the ack). One bot process serves every round: a
burst while nothing runs (the share that is not the backup's), then a burst during `/backup main
--format gzip`. The machine is shared, so the figures are medians over the rounds. Nothing is written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 the way bench/run.py has always taken them (of 50, p99 is the slowest)."""
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class AckBot:
    """`backupbot run` in a child process on a free port, and the fake Slack it talks to."""

    def __init__(self, dsn: str, workdir: str, profile: str | None = None):
        from tests.fix_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlackWebAPI, SlackSender

        self.fake = FakeSlackWebAPI()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = Path(workdir) / "bot.toml"
        config.write_text(f'[state]\npath = "{workdir}/ack.db"\n[storage]\nurl = "file://{workdir}/ack"\n'
                          '[access]\noperators = ["U0BENCH"]\n')  # nobody operates without operators
        env = {**os.environ, "DATABASE_URL": dsn, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
               "SLACK_API_URL": self.fake.url,
               "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.profile = profile
        self.bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--host", "127.0.0.1", "--port",
                                     str(self.port), "--config", str(config)], env=env, cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.slack = SlackSender(f"http://127.0.0.1:{self.port}/slack/events", self.fake)
        self.backups = 0
        self.bursts = 0
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.bot.poll() is not None:
                    self.close()
                    raise
                time.sleep(0.1)

    def _replies(self) -> int:
        return len(self.fake.said("chat.postEphemeral")) + len(self.fake.said("response_url"))

    def burst(self, count: int, label: str) -> list[float]:
        """`count` concurrent `/backup list`; their ack latencies. Waits for their replies too, so one
        burst's listeners are done before the next burst starts."""
        before = self._replies()
        spy = self._spy(label)
        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(lambda i: self.slack.command("/backup", "list", user=f"U{i:05d}"), range(count)))
        if spy is not None:
            spy.wait(60)
        bad = [status for status, _, _ in results if status != 200]
        if bad:
            raise RuntimeError(f"{len(bad)} commands were not acknowledged (HTTP {bad[0]})")
        self.fake.wait_for(lambda api: self._replies() >= before + count, timeout=120, what="the list replies")
        return [seconds for _, _, seconds in results]

    def _spy(self, label: str):
        """py-spy on the bot for the burst's couple of seconds (native frames too: where the GIL goes)."""
        if not self.profile:
            return None
        self.bursts += 1
        out = f"{self.profile}-{self.bursts:02d}-{label}.txt"
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(self.bot.pid), "--duration", "3", "--rate", "250",
                                "--gil", "--format", "raw", "--output", out, "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached before the first command
        return spy

    def start_backup(self, fmt: str = "gzip") -> None:
        started = len(self.fake.said("chat.postMessage"))
        self.slack.command("/backup", f"main --format {fmt}", user="U0BENCH")
        self.fake.wait_for(lambda api: len(api.said("chat.postMessage")) > started, timeout=60, what="the backup start")

    def wait_backup(self) -> None:
        self.backups += 1
        self.fake.wait_for(lambda api: len([a for a in api.said("chat.update") if "succeeded" in a.get("text", "")])
                           >= self.backups, timeout=1800, what="the backup's success")

    def backup_running(self) -> bool:
        return len([a for a in self.fake.said("chat.update") if "succeeded" in a.get("text", "")]) <= self.backups

    def close(self) -> None:
        self.bot.terminate()
        try:
            self.bot.wait(30)
        except subprocess.TimeoutExpired:
            self.bot.kill()
        self.fake.close()


def ack_latencies(dsn: str, workdir: str, count: int = 50) -> tuple[float, float]:
    """bench/run.py's figure: p50/p99 of `count` concurrent signed commands while a backup runs."""
    bot = AckBot(dsn, workdir)
    try:
        bot.start_backup()
        latencies = bot.burst(count, "backup")
        bot.wait_backup()
    finally:
        bot.close()
    return percentiles(latencies)


def rounds(dsn: str, workdir: str, count: int, runs: int, fmt: str, profile: str | None) -> list[dict]:
    """Per round: a burst with nothing running, then one during a backup (that must still be running)."""
    bot = AckBot(dsn, workdir, profile)
    out = []
    try:
        bot.burst(count, "warm")  # first requests import and connect: not what is measured
        for i in range(runs):
            idle = percentiles(bot.burst(count, "idle"))
            bot.start_backup(fmt)
            during = percentiles(bot.burst(count, "backup"))
            overlapped = bot.backup_running()
            bot.wait_backup()
            out.append({"idle": idle, "backup": during, "overlapped": overlapped})
            print(f"round {i + 1}: idle p50 {idle[0] * 1000:.0f} ms p99 {idle[1] * 1000:.0f} ms | during a backup "
                  f"p50 {during[0] * 1000:.0f} ms p99 {during[1] * 1000:.0f} ms"
                  + ("" if overlapped else "  (the backup ended before the burst did: make --size larger)"),
                  flush=True)
    finally:
        bot.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=300, help="database size in MB (bench/run.py's generator)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=50, help="concurrent commands per burst")
    parser.add_argument("--format", default="gzip", choices=("gzip", "plain", "custom"))
    parser.add_argument("--profile", help="py-spy raw profiles of the bot per burst, to PREFIX-NN-LABEL.txt")
    args = parser.parse_args()
    if args.profile and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy on PATH (pip install py-spy)")

    from bench.run import generate
    from commands.pg.cluster import TemporaryCluster

    with TemporaryCluster() as cluster:
        dsn = cluster.create_database("bench_ack")
        print(f"generating a {args.size} MB database…", flush=True)
        actual = generate(dsn, args.size)
        with tempfile.TemporaryDirectory(prefix="backupbot-ack-") as tmp:
            results = rounds(dsn, tmp, args.count, args.rounds, args.format, args.profile)
    load = os.getloadavg()
    med = {k: (statistics.median(r[k][0] for r in results), statistics.median(r[k][1] for r in results))
           for k in ("idle", "backup")}
    print(f"\n{args.count} concurrent signed `/backup list`, {actual / 1024 / 1024:.0f} MB database, "
          f"`--format {args.format}`, median of {len(results)} rounds, {os.cpu_count()} cores "
          f"(load average {load[0]:.1f} at the end: the machine is shared)\n")
    print("| burst | p50 | p99 |\n|---|---:|---:|")
    for key, what in (("idle", "nothing running"), ("backup", "during a backup")):
        print(f"| {what} | {med[key][0] * 1000:.0f} ms | {med[key][1] * 1000:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
