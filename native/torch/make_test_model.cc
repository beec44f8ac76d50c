// make_test_model OUT_DIR: writes the TorchScript test models of test/torch-plugin.test.ts, made
// with libtorch alone (torch::jit::Module + define + save; no Python):
//
//   OUT_DIR/linear.pt  forward(x) = relu(x @ w + b), x: float32 [batch, 4] -> [batch, 3]
//                      add_one_(x): adds 1 to x in place and returns it (proves that a run reads
//                      and writes the caller's memory)
//                      echo(x): a copy of x, of any dtype (the dtype round trip)
//   OUT_DIR/pair.pt    forward(x) = (relu(x @ w + b), (x @ w + b).sum(1)): two outputs
//
// The weights are fixed (the test recomputes them): w[i][j] = ((3i + 5j) % 7 - 3) / 4 for a 4 x 3
// w, b[j] = (j - 1) / 2. Quarters and halves keep every product and sum of the test's inputs exact
// in float32.
#include <torch/script.h>

#include <cstdio>
#include <exception>
#include <string>

namespace {

torch::Tensor Weights() {
  torch::Tensor w = torch::empty({4, 3}, torch::kFloat32);
  auto a = w.accessor<float, 2>();
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 3; ++j) a[i][j] = static_cast<float>((3 * i + 5 * j) % 7 - 3) / 4.0f;
  }
  return w;
}

torch::Tensor Bias() {
  torch::Tensor b = torch::empty({3}, torch::kFloat32);
  for (int j = 0; j < 3; ++j) b[j] = static_cast<float>(j - 1) / 2.0f;
  return b;
}

torch::jit::Module Base(const char* name) {
  torch::jit::Module m(name);
  m.register_parameter("w", Weights(), /*is_buffer=*/false);
  m.register_parameter("b", Bias(), /*is_buffer=*/false);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  try {
    torch::jit::Module linear = Base("Linear");
    linear.define(R"(
def forward(self, x):
    return torch.relu(torch.matmul(x, self.w) + self.b)

def add_one_(self, x):
    x.add_(1.0)
    return x

def echo(self, x):
    return x.clone()
)");
    linear.eval();
    linear.save(dir + "/linear.pt");

    torch::jit::Module pair = Base("Pair");
    pair.define(R"(
def forward(self, x):
    h = torch.matmul(x, self.w) + self.b
    return torch.relu(h), h.sum(1)
)");
    pair.eval();
    pair.save(dir + "/pair.pt");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_test_model: %s\n", e.what());
    return 1;
  }
  std::printf("%s/linear.pt\n%s/pair.pt\n", dir.c_str(), dir.c_str());
  return 0;
}
