"""Tables that chapters print render as Markdown, whatever their cells hold."""

from foundry_core.viz import markdown_table


def test_markdown_table_renders_and_escapes_pipes():
    table = markdown_table([{"token": "<|im_end|>", "id": 5}, {"token": "a", "id": 6}])
    assert table._repr_markdown_() == table
    lines = table.splitlines()
    assert lines[0] == "| token | id |" and lines[1] == "|---|---|"
    assert lines[2] == "| <\\|im_end\\|> | 5 |"
    assert all(line.count("|") - line.count("\\|") == 3 for line in lines)
    assert markdown_table([]) == ""
