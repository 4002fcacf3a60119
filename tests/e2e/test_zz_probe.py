def test_probe(run_live):
    run = run_live()
    print(run.seconds, run.report["verdict"], run.result.parseoutcomes())
    print("\n".join(run.result.outlines[-40:]))
    print(sorted(c["nodeid"] for c in run.report["checks"])[:3])
