"""Names shared by everything that plans or reports memory. The plan itself is traced from the
real training step (pajama.training.trace, pajama.training.plan), not computed from a formula."""

GB = 2**30  # reported as GiB

PRECISIONS = ("bf16-mixed", "bf16-true", "16-mixed", "32-true")  # what pajama trains in
MIXED = ("bf16-mixed", "16-mixed")
