"""`parley`: the command-line tool of Parley, built on the Python SDK (`parley.client`).

Entry point: `parley.cli.main:app` (installed as the `parley` command). See docs/cli.md.
"""
