"""`python -m greenllm.agent`: the same as `greenllm agent`."""

from greenllm.agent.command import main

raise SystemExit(main())
