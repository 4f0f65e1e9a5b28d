# The two commands (see README): `make run` and `make test`.
.PHONY: setup run test bench

setup:
	scripts/setup

# The main job on the bundled models: a chat buffer, then a completion buffer.
run: setup
	.venv/bin/limner --no-log < examples/chat.md
	@echo
	.venv/bin/limner --no-log < examples/completion.md
	@echo

test:
	scripts/test -q
