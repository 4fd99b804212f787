"""The benchmark harness: score any video model's continuations on phyray's physics suites.

    phyray bench export --suite uniform_motion --out suite-um          # what the model continues
    phyray bench score --suite uniform_motion --videos my-videos --out report-um

`suites` defines the named, versioned evaluation sets and exports their conditioning frames;
`media` reads and writes MP4, PNG and NumPy videos; `score` checks a submission video by video
and scores it with phyray's evaluators beside the parse and compression floors; `baselines`
gives the reference entries (ground truth, frozen, constant velocity). It sits beside
`phyray.eval` in the flow: it uses data and eval, never train or study.
"""
