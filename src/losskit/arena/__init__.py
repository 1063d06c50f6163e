"""The arena: real offline datasets, label scenarios, trials, result store and reports."""
