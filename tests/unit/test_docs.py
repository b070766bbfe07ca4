"""The README is the first thing a user runs: its first lines are the two commands, and it names no file outside
the repository (a user's clone has no ../shared)."""
import re
from pathlib import Path

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_readme_starts_with_install_demo_and_test_commands():
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert block[0].endswith("ddad demo") and "pip install -e '.[test]'" in block[0]
    assert block[1] == "python -m pytest"
    ci = (Path(__file__).parents[2] / ".ci" / "run").read_text()
    assert "pip install -q -e '.[test]'" in ci and "\npython -m pytest\n" in ci


def test_readme_points_to_no_file_outside_the_repository():
    assert not re.findall(r"\.\./[\w.-]+", README)
