"""The Dask dashboard works during a run (bokeh is installed) and is not advertised after it."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import pytest

pytestmark = [pytest.mark.grid, pytest.mark.slow]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode("utf-8", "replace")
            # without bokeh Dask answers 200 too, with a page that says it needs bokeh
            return -1 if "needs bokeh" in body else response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_dashboard_status_answers_200_during_a_run(tmp_path, capfd):
    from distributed import default_client

    from hubcat.synthetic import write_synthetic_mosaic
    from pipeline import run_pipeline

    mosaic = write_synthetic_mosaic(tmp_path / "field.fits", (224, 224 * 2), n_sources=60)
    seen: dict[str, int] = {}
    events: list[tuple] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                link = default_client().dashboard_link
            except ValueError:  # no client yet
                time.sleep(0.1)
                continue
            url = link.rsplit("/", 1)[0] + "/status"
            seen.setdefault(url, _status(url))
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        capfd.readouterr()
        summary = run_pipeline(
            [mosaic],
            tmp_path / "cat",
            zooms=(1,),
            unit_size=1,
            workers=1,
            progress=lambda *event: events.append(event),
        )
    finally:
        stop.set()
        thread.join(10)
    assert summary.units_computed == 2 and summary.merkle_root
    # with a progress callback the library reports every step and prints nothing itself
    out, err = capfd.readouterr()
    assert "units" not in out and "━" not in err, (out, err)
    stages = [e[0] for e in events]
    assert {"tiling", "embedding", "catalogue", "message"} <= set(stages)
    assert ("embedding", 2, 2) in [e[:3] for e in events] and ("tiling", 1, 1) in [
        e[:3] for e in events
    ]
    links = [e[3] for e in events if e[0] == "message" and "dashboard" in e[3]]
    assert len(links) == 1
    assert len(seen) == 1, seen
    url, code = next(iter(seen.items()))
    assert code == 200, f"{url} answered {code} during the run"
    assert links[0].endswith(url)  # the link the run reported is the one that answered
    # the local cluster is gone now: its link is not in the summary, and it no longer answers
    base = url.removesuffix("/status")
    assert summary.dashboard is None and base not in summary.render()
    assert '"dashboard": null' in summary.to_json()
    assert _status(url) == 0
