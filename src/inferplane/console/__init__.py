"""The web console: live pool, routing decisions, queues, rollouts and batch jobs in one page."""
