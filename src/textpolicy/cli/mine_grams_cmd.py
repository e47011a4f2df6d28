"""``tp mine-grams``: mine candidate strategic grams from correct solutions into a phrase file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click


@click.command("mine-grams", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), required=True,
              help="Phrase file to write (what planning's grams_file reads).")
@click.option("--text-field", default=None,
              help="JSONL field with the solution text(s) [completion/solution/response/text].")
@click.option("--correct-field", default=None,
              help="JSONL field flagging correct solutions [correct/score; else every row].")
@click.option("--prompt-field", default=None,
              help="JSONL field naming the prompt [prompt_id/unique_id/idx/id; else the row].")
@click.option("--subject-field", default=None, help="JSONL subject field [subject/type].")
@click.option("--background-field", default=None,
              help="JSONL field with the problem text [problem/question/prompt].")
@click.option("--min-n", type=int, default=3, show_default=True, help="Fewest words a gram.")
@click.option("--max-n", type=int, default=5, show_default=True, help="Most words a gram.")
@click.option("--min-share", type=float, default=0.01, show_default=True,
              help="Least share of correct solutions that must use a gram.")
@click.option("--min-prompts", type=int, default=3, show_default=True,
              help="Least distinct prompts whose solutions use a gram.")
@click.option("--max-background-ratio", type=float, default=0.25, show_default=True,
              help="Drop a gram the problems use at above this x its solution share.")
@click.option("--max-subject-ratio", type=float, default=3.0, show_default=True,
              help="Drop a gram whose share in one subject is above this x its overall share.")
@click.option("--top", type=int, default=64, show_default=True, help="Most grams to keep.")
@click.option("--json", "as_json", is_flag=True, help="Print the grams and counts as JSON.")
def mine_grams(sources: tuple[Path, ...], out: Path, text_field: str | None,
               correct_field: str | None, prompt_field: str | None, subject_field: str | None,
               background_field: str | None, min_n: int, max_n: int, min_share: float,
               min_prompts: int, max_background_ratio: float, max_subject_ratio: float,
               top: int, as_json: bool) -> None:
    """Mine candidate strategic grams (3-5-word phrases) from correct solutions.

    SOURCES: run directories (emergence/generations.jsonl, correct completions), JSONL files
    or text files (one solution a line). A gram ranks by how many distinct correct solutions
    use it; numbers, variables and LaTeX cannot be part of one. Writes a phrase file for
    planning's grams_file (e.g. planning = {grams_file = "grams.txt"}).
    """
    from textpolicy_builtins import gram_mining as gm

    from textpolicy import __version__

    fields = gm.Fields(text=text_field, correct=correct_field, prompt=prompt_field,
                       subject=subject_field, background=background_field)
    solutions: list[gm.Solution] = []
    background: list[str] = []
    for src in sources:
        sols, bg = gm.read_solutions(src, fields)
        # prompts of different sources never merge
        solutions.extend(gm.Solution(text=s.text, prompt=f"{src}\x00{s.prompt}",
                                     subject=s.subject) for s in sols)
        background.extend(bg)
    result = gm.mine_grams(solutions, background, min_n=min_n, max_n=max_n,
                           min_share=min_share, min_prompts=min_prompts,
                           max_background_ratio=max_background_ratio,
                           max_subject_ratio=max_subject_ratio, top=top)
    header = [f"strategic grams mined by tp mine-grams (textpolicy {__version__}) from "
              + ", ".join(s.name for s in sources),
              f"rules: {min_n}-{max_n} words, share >= {min_share:g}, prompts >= "
              f"{min_prompts}, background ratio <= {max_background_ratio:g}, subject ratio "
              f"<= {max_subject_ratio:g}, top {top}"]
    text = gm.format_grams_file(result, header)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if as_json:
        click.echo(json.dumps({
            "out": str(out), "solutions": result.documents, "prompts": result.prompts,
            "background": result.background_documents, "candidates": result.candidates,
            "grams": [{"phrase": g.phrase, "solutions": g.solutions, "prompts": g.prompts,
                       "solution_share": g.solution_share,
                       "background_share": g.background_share} for g in result.grams]},
            indent=2))
        return
    click.echo(f"{result.documents} correct solutions ({result.prompts} prompts), "
               f"{result.background_documents} background texts: {len(result.grams)} grams "
               f"-> {out}")
    for g in result.grams[:20]:
        click.echo(f"  {g.phrase:36s} {g.solutions:6d} ({g.solution_share:6.2%})")
    if len(result.grams) > 20:
        click.echo(f"  ... {len(result.grams) - 20} more in {out}")
