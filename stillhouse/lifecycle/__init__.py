"""The lifecycle of a task in auto mode: a state machine over the store. States and their one
transition table (`states`), the controller that moves a task one step a pass (`controller`, its
handlers in a table), pure transitions (`transitions`) that people's verbs use too (`manual`),
rollout gates on live evidence (`rollout`), drift (`monitor`), stored events (`events`) and the
routing table it publishes (`table`).

It imports only the store, the config, routing and the kernels (answers, stats, intents):
curation, training and evaluation reach it through the `steps.Steps` protocol, which
`stillhouse.worker` composes (tests/test_layers.py holds it to that)."""
