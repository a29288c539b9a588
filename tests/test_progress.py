"""Progress display: plain lines (not carriage returns) when standard error is not a terminal."""

from spikeseg.progress import LOG_EVERY_PERCENT, progress


def test_plain_lines_every_few_percent_without_a_terminal(capsys):
    bar = progress(total=40, desc="epoch 1/2")  # pytest's stderr is not a terminal
    for i in range(40):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 100 // LOG_EVERY_PERCENT  # one per mark, the last one at 100%
    assert lines[0].startswith(f"epoch 1/2: {LOG_EVERY_PERCENT}% (4/40)")
    assert lines[-1].startswith("epoch 1/2: 100% (40/40)") and lines[-1].endswith("loss=0.025")


def test_iterating_and_disabling(capsys):
    assert list(progress(range(7), desc="eval")) == list(range(7))
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("eval: 100% (7/7)")
    assert list(progress(range(3), desc="quiet", disable=True)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
