"""Built-in data: the Fashion-MNIST reader and the seeded epoch order shared by the stream feed and the benchmarks."""
