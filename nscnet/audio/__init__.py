"""Audio side of nscnet: reading recordings (`io`) and label tracks (`labels`), cutting
segments (`segments`), turning them into images (`features`), and the synthetic song
generator (`synth`) used by the demo and the tests."""
