"""Support code for the scripts in ``tools/`` and for the tests, not the
library.

Runner set-up (:mod:`.runner_setup`), dataset checks (:mod:`.dataset_checks`),
log reading (:mod:`.run_logs`), test-time augmentation (:mod:`.tta`), the
fine-tuning report (:mod:`.fine_tuning`) and the demo-data generators
(:mod:`.demo_data`). ``import resnest_mm`` never imports this package: the
backbone and weight loading do not depend on it, and it may use what only the
tools need.
"""
