"""The tables in files: Markdown (caption above, notes below), CSV (machine-readable) and
LaTeX (booktabs), with the best mean per column in bold."""

from __future__ import annotations

import io

import polars as pl

from multirec.reporting.tables import COLUMNS, DIFFERENT_LISTS, DIGITS, TUNED, Cell, Table


def _cell_text(cell: Cell | None, pm: str) -> str:
    if cell is None:
        return "\u2013"
    text = f"{cell.mean:.{DIGITS}f}"
    if cell.n > 1:
        text += f"{pm}{cell.std:.{DIGITS}f}"
    return text


def to_markdown(table: Table, extra: list[str] | None = None) -> str:
    """The table with its caption above and notes (plus ``extra`` lines) below."""
    heads = [h for h, _ in COLUMNS]
    best = {m: table.best(m) for _, m in COLUMNS}
    lines = [
        f"**{table.title}.** {table.caption}",
        "",
        "| Method | " + " | ".join(heads) + " | Seeds |",
        "|---|" + "---:|" * (len(heads) + 1),
    ]
    for section in table.sections:
        if section.heading:
            lines.append(f"| *{section.heading}* |" + " |" * (len(heads) + 1))
        for r in section.rows:
            cells = []
            for _, m in COLUMNS:
                text = _cell_text(r.cells.get(m), " \u00b1 ")
                cells.append(f"**{text}**" if id(r) in best[m] else text)
            lines.append(f"| {table.label(r)} | " + " | ".join(cells) + f" | {len(r.entries)} |")
    tail = [*table.notes, *(extra or [])]
    if tail:
        lines += ["", *(f"- {n}" for n in tail)]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """One line per row: means, standard deviations, seeds and list counts (machine-readable)."""
    records = []
    for section in table.sections:
        for r in section.rows:
            rec: dict[str, object] = {
                "section": section.heading or "",
                "method": table.label(r),
                "kind": r.kind,
                "split": table.split,
                "protocol": table.protocol,
                "tuned": r.tuning is not None,
                "n_seeds": len(r.entries),
                "seeds": " ".join(map(str, r.seeds)),
                "n_lists": r.n_lists,
            }
            for _, m in COLUMNS:
                cell = r.cells.get(m)
                rec[f"{m}_mean"] = cell.mean if cell else None
                rec[f"{m}_std"] = cell.std if cell and cell.n > 1 else None
            records.append(rec)
    buf = io.BytesIO()
    pl.DataFrame(records, infer_schema_length=None).write_csv(buf)
    return buf.getvalue().decode()


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\u00b1": r"$\pm$",
    DIFFERENT_LISTS: r"$^\dagger$",
    TUNED: r"$^\ddagger$",
    "\u2013": "--",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


def to_latex(table: Table) -> str:
    """A ``table`` environment with booktabs rules (``\\usepackage{booktabs}``)."""
    heads = [h for h, _ in COLUMNS]
    best = {m: table.best(m) for _, m in COLUMNS}
    width = len(heads) + 2
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        r"\begin{tabular}{l" + "r" * (width - 1) + "}",
        r"\toprule",
        "Method & " + " & ".join(latex_escape(h) for h in heads) + r" & Seeds \\",
        r"\midrule",
    ]
    for i, section in enumerate(table.sections):
        if i:
            lines.append(r"\midrule")
        if section.heading:
            lines.append(
                rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(section.heading)}}}}} \\"
            )
        for r in section.rows:
            cells = []
            for _, m in COLUMNS:
                text = latex_escape(_cell_text(r.cells.get(m), " \u00b1 "))
                cells.append(rf"\textbf{{{text}}}" if id(r) in best[m] else text)
            lines.append(
                latex_escape(table.label(r))
                + " & "
                + " & ".join(cells)
                + rf" & {len(r.entries)} \\"
            )
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\footnotesize " + "; ".join(latex_escape(n) for n in table.notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
