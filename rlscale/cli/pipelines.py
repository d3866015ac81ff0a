"""``rlscale pipelines``: the bundled pipelines as a table, a spec validated, or the spec format (JSON Schema)."""

from __future__ import annotations

import argparse

from rlscale.cli.args import add_json, add_set, load_spec
from rlscale.cli.output import compact, console, emit_json
from rlscale.errors import RlscaleError


def register(sub) -> None:
    p = sub.add_parser("pipelines", help="list bundled pipelines: stages, variants, SLA")
    p.add_argument(
        "--spec",
        action="append",
        metavar="NAME|FILE",
        help="show only this pipeline or spec file (repeatable)",
    )
    add_set(p)
    p.add_argument("--schema", action="store_true", help="print the spec format as a JSON Schema (one JSON document)")
    add_json(p)
    p.set_defaults(func=cmd_pipelines)


def cmd_pipelines(args: argparse.Namespace) -> int:
    from rlscale.spec import bundled_pipelines, spec_json_schema

    if args.schema:
        if args.spec or args.overrides:
            raise RlscaleError("--schema prints the spec format; it takes no --spec or --set")
        emit_json(spec_json_schema())
        return 0
    specs = [load_spec(n, args) for n in (args.spec or bundled_pipelines())]
    if args.spec:  # a spec the user names: what `rlscale check` finds wrong with it, as warnings (stderr)
        from rlscale.cli.check import warn_problems

        for s in specs:
            warn_problems(s)
    if args.json:
        emit_json([s.to_dict() for s in specs])
        return 0
    from rich.table import Table

    table = Table(title="rlscale pipelines")
    for col in ("pipeline", "SLA (s)", "stage", "batch", "cores", "replicas", "variant", "accuracy", "startup (s)"):
        table.add_column(col)
    for s in specs:
        for i, st in enumerate(s.stages):
            for j, v in enumerate(st.variants):
                first = j == 0
                table.add_row(
                    s.name if i == 0 and first else "",
                    f"{s.sla_s:g}" if i == 0 and first else "",
                    st.name if first else "",
                    compact(st.batch_sizes) if first else "",
                    compact(st.cores) if first else "",
                    f"{st.min_replicas}-{st.max_replicas}" if first else "",
                    v.name,
                    f"{v.accuracy:.3f}",
                    f"{v.startup_s:g}",
                    end_section=j == len(st.variants) - 1,
                )
    console().print(table)
    return 0
