"""The checker: trains the manual and the torch learner in lock step and proves they match.

    flags       compare.py's flags and their validation
    learner     Learner: one implementation's model and optimizer, behind one interface
    epoch       one epoch of the lock step, checking every step
    checks      how two tensors agree (three levels), in a few numbers per step
    limits      how close is close enough: the verdict's thresholds, float32 rounding
    diagnosis   the tutor: where a mismatch starts, and what kind it is
      kinds       the kinds, from two tensors: shape, scale, non-finite, partial, other
      reference   float64 twins of a step: rounding, or not
      replay      a failed step, or an update, replayed to see where it differs
    report      the verdict, the final table, report.json
    plots       the PNGs
    tracebacks  where an error was raised, in one line

manual/ and torch_impl/ import nothing from here; this package reaches them only through
learner.Learner.
"""
