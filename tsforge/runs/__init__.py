"""What is done with a run directory after training: load its model (`load`), evaluate it
(`evaluate`), forecast with it (`predict`), score forecasts as the competitions do (`score`),
and list and compare runs (`table`).

    tsforge evaluate RUN_DIR            tsforge predict RUN_DIR --input SRC --output OUT
    tsforge score FORECASTS --actuals FILE --history STORE_OR_FILE --season M
    tsforge runs list DIR...            tsforge runs compare RUN_DIR RUN_DIR...

These read what `tsforge.train` wrote (`tsforge.train.rundir` says where); nothing in
`tsforge.train` imports them.
"""
