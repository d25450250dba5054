"""Turn evaluation results into a report a person reads (Markdown)."""

from __future__ import annotations


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"- checkpoint: `{report['checkpoint']}` (step {report['step']})",
        f"- test set: `{report['source']}` → `{report['reference']}` ({report['sentences']} sentences)",
    ]
    training = report.get("training")
    if training:
        lines.append(
            f"- training: {training['steps']} steps, {training['train_minutes']:.1f} min on "
            f"{training['device']} ({training['threads']} threads); {training['stopped']}"
        )
    lines += ["", "| system | BLEU | chrF | TER | sentences/s |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, system in report["systems"].items():
        s = system["scores"]
        lines.append(
            f"| {name} | {s['bleu']['score']:.2f} | {s['chrf']['score']:.2f} | {s['ter']['score']:.2f} "
            f"| {system['sentences_per_s']:.1f} |"
        )
    lines += ["", "Signatures (sacreBLEU):", ""]
    first = next(iter(report["systems"].values()))["scores"]
    for metric, value in first.items():
        lines.append(f"- {metric}: `{value['signature']}`")
    if report["samples"]:
        lines += ["", "## Samples", ""]
        names = list(report["systems"])
        for sample in report["samples"]:
            lines.append(f"**#{sample['index']}** source: {_escape(sample['source'])}  ")
            lines.append(f"reference: {_escape(sample['reference'])}  ")
            for name in names:
                lines.append(f"{name}: {_escape(sample[name])}  ")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
