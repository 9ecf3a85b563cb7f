#!/usr/bin/env bash
# The report's test-set tables, in one place: the TA's three commands (docs/ta-guide.md) on the test split for the
# shipped model in checkpoints/ (results/test.*, test-epochs.*, test-phase.*). Run it only once the model is
# chosen on the valid split, and again whenever another model ships; nothing is ever chosen with these numbers.
#   bash bench/test_tables.sh MUSDB_ROOT [more hw2/infer.py flags, e.g. --jobs 1]
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:?usage: bash bench/test_tables.sh MUSDB_ROOT [hw2/infer.py flags]}"
shift
milestones=(checkpoints/epoch[0-9][0-9][0-9].pt)  # the shipped model's milestones, then its best epochs
python hw2/infer.py --musdb-root "$root" --name test "$@"
python hw2/infer.py --musdb-root "$root" --checkpoint "${milestones[@]}" checkpoints/vocals.pt --name test-epochs \
    --samples 0 "$@"
# the TA's phase table, plus the rows of the valid table: the blend's own phase (its complex member's predicted
# phase in the sum), Griffin-Lim from the mixture phase, Wiener and the references
python hw2/infer.py --musdb-root "$root" --phase mixture network griffinlim griffinlim-mix wiener --references --samples 3 \
    --name test-phase "$@"
