"""Claude Code Provider Balancer: a mitmproxy addon. `addon/balancer.py` is the script mitmproxy loads."""
