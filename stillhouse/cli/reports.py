"""Verbs for money and quality: report, costs."""

from __future__ import annotations

import click

from ..config import Config, config_path, load_config
from .common import CONFIG_HELP, config_option, main, print_json


def _money(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


@main.command()
@config_option
@click.option("--task", help="Only this task.")
@click.option("--days", default=7.0, show_default=True, type=click.FloatRange(min=0.001))
@click.option(
    "--calls-per-day",
    type=click.FloatRange(min=0),
    help="Project monthly spend at this volume (default: the window's own rate).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def report(
    config: Config, task: str | None, days: float, calls_per_day: float | None, as_json: bool
) -> None:
    """Costs, savings vs all-teacher, latency and quality per task, model and route."""
    from ..report import report as build_report
    from ..store import open_store

    with open_store(config.store.url) as store:
        doc = build_report(store, config, task=task, days=days, calls_per_day=calls_per_day)
    if as_json:
        print_json(doc)
        return
    click.echo(f"last {days:g} days; prices: {doc['prices']['catalog_source']}")
    for name, t in doc["tasks"].items():
        c, q = t["costs"], t["quality"]
        click.echo(
            f"\n{name}: {c['requests']} requests, {c['calls_per_day']}/day; per call "
            f"{_money(c['cost_per_call'], 6)} vs all-teacher "
            f"{_money(c['teacher_cost_per_call'], 6)}"
        )
        click.echo(
            f"  monthly {_money(c['monthly'])} vs all-teacher {_money(c['teacher_monthly'])}: "
            f"saving {_money(c['saving_monthly'])}"
            + (f" ({c['saving_fraction']:.1%})" if c["saving_fraction"] is not None else "")
        )
        agreement = "-" if q["agreement"] is None else f"{q['agreement']:.3f}"
        fallback = "-" if q["fallback_rate"] is None else f"{q['fallback_rate']:.1%}"
        click.echo(f"  agreement {agreement} (n={q['agreement_samples']}), fallback {fallback}")
        for route, r in t["routes"].items():
            if r["calls"]:
                click.echo(f"  route {route:<9} {r['calls']:>7} calls  {_money(r['cost'], 4)}")
        for model, m in t["models"].items():
            lat, ttft = m["latency_ms"], m["ttft_ms"]
            click.echo(
                f"  model {model:<12} {m['calls']:>7} calls  {_money(m['cost_per_call'], 6)}/call"
                f"  p50 {_ms(lat['p50'])} p95 {_ms(lat['p95'])}"
                f"  ttft p50 {_ms(ttft['p50'])} p95 {_ms(ttft['p95'])}"
            )
        for intent, i in list(t["intents"].items())[:20]:
            agree = "-" if i["agreement"] is None else f"{i['agreement']:.3f}"
            click.echo(
                f"  intent {intent:<24} {i['requests']:>6} requests"
                f"  student {i['student_share']:.0%}"
                f"  agreement {agree} (n={i['agreement_samples']})"
            )


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--teacher", required=True, help="A model of stillhouse.toml or of the catalog.")
@click.option("--student", required=True, help="A model of stillhouse.toml or of the catalog.")
@click.option("--share", default=0.9, show_default=True, type=click.FloatRange(0, 1))
@click.option("--calls-per-day", required=True, type=click.FloatRange(min=0))
@click.option("--input-tokens", required=True, type=click.IntRange(min=0))
@click.option("--output-tokens", required=True, type=click.IntRange(min=0))
@click.option("--cached-tokens", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def costs(
    config_file: str | None,
    teacher: str,
    student: str,
    share: float,
    calls_per_day: float,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    as_json: bool,
) -> None:
    """What-if: monthly cost of all-teacher against a teacher/student hybrid."""
    from ..report import what_if

    path = config_path(config_file)
    config = load_config(path) if config_file or path.exists() else None
    doc = what_if(
        teacher,
        student,
        share=share,
        calls_per_day=calls_per_day,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        config=config,
    )
    if as_json:
        print_json(doc)
        return
    t, s, h, sv = doc["teacher"], doc["student"], doc["hybrid"], doc["saving"]
    a = doc["assumptions"]
    click.echo(
        f"{a['calls_per_day']:,g} calls/day, {input_tokens} input + {output_tokens} output "
        f"tokens, {a['days_per_month']}-day month (prices as of {a['catalog_date']} unless set)"
    )
    click.echo(
        f"  all-teacher {t['model']:<20} {_money(t['per_call'], 6)}/call  "
        f"{_money(t['monthly'])}/month"
    )
    click.echo(
        f"  hybrid {share:.0%} {s['model']:<16} {_money(h['per_call'], 6)}/call  "
        f"{_money(h['monthly'])}/month"
    )
    click.echo(f"  saving {_money(sv['monthly'])}/month ({sv['fraction']:.1%})")
