"""The review side of the task workflow: project review policy, reviewers' decisions, edit measures.

Annotators work through :mod:`annotation.workflow` (claim, draft, accept/submit/reject); what
happens to a closed task afterwards lives here: :mod:`.routing` decides whether it is reviewed,
sampled out or auto-approved, :mod:`.services` holds the reviewer's actions (approve, return with
a comment, edit and approve) and the review queue, :mod:`.measures` how far a person's mask moved
from the model's proposal.
"""
