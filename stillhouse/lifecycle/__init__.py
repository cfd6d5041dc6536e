"""The lifecycle of a task in auto mode: states, the controller that moves tasks through them,
rollout gates on live evidence, and drift monitoring. Never imported on a request's path except
for the routing table it publishes (see stillhouse.routing)."""
