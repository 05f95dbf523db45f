// GPTDataset / BlendedDataset: sample windows across documents, deterministic shuffles, split
// disjointness, blend proportions and random access, make_batch and open_training_data checks.
#include "runtime/data/gpt_dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <thread>

#include "tests/unit/runtime/data/data_test_util.h"

namespace weft {
namespace {

using testing::error_of;
using testing::TempDir;

// Document d holds tokens 1000*d + j, so every token says where it came from.
std::vector<std::vector<int64_t>> numbered_docs(const std::vector<int>& lengths) {
  std::vector<std::vector<int64_t>> docs;
  for (size_t d = 0; d < lengths.size(); ++d) {
    std::vector<int64_t> doc;
    for (int j = 0; j < lengths[d]; ++j) doc.push_back(1000 * static_cast<int64_t>(d) + j);
    docs.push_back(doc);
  }
  return docs;
}

std::shared_ptr<const IndexedDataset> make_dataset(const std::string& prefix,
                                                   const std::vector<std::vector<int64_t>>& docs,
                                                   int code = kDtypeInt32) {
  IndexedDatasetWriter w(prefix, code);
  for (const auto& d : docs) w.add_document(d);
  w.finalize();
  return std::make_shared<const IndexedDataset>(prefix);
}

std::vector<int64_t> sample(const SampleSource& s, int64_t i) {
  std::vector<int64_t> out(static_cast<size_t>(s.seq_len() + 1));
  s.get(i, out.data());
  return out;
}

GPTDatasetOptions opts(int64_t seq_len, SplitPart which, bool shuffle, std::string split = "98,2") {
  GPTDatasetOptions o;
  o.seq_len = seq_len;
  o.which = which;
  o.shuffle = shuffle;
  o.split = std::move(split);
  return o;
}

TEST(GPTDatasetTest, SamplesAreStreamWindowsAcrossDocuments) {
  TempDir dir;
  auto docs = numbered_docs({5, 0, 3, 7, 1, 6});  // an empty document in the middle
  std::vector<int64_t> stream;
  for (const auto& d : docs) stream.insert(stream.end(), d.begin(), d.end());
  auto data = make_dataset(dir.file("d"), docs);
  for (int64_t T : {1, 2, 4, 7, 21}) {
    SCOPED_TRACE(T);
    GPTDataset ds(data, opts(T, SplitPart::kAll, false));
    const int64_t n = (static_cast<int64_t>(stream.size()) - 1) / T;
    ASSERT_EQ(ds.num_samples(), n);
    EXPECT_EQ(ds.num_tokens(), 22);
    for (int64_t k = 0; k < n; ++k) {
      std::vector<int64_t> want(stream.begin() + k * T, stream.begin() + k * T + T + 1);
      EXPECT_EQ(sample(ds, k), want) << "sample " << k;
      EXPECT_EQ(sample(ds, k + 3 * n), want) << "epoch 3, unshuffled";
    }
  }
  // Consecutive samples overlap by exactly one token (the last label is the next first input).
  GPTDataset ds(data, opts(4, SplitPart::kAll, false));
  EXPECT_EQ(sample(ds, 0).back(), sample(ds, 1).front());
}

TEST(GPTDatasetTest, ShuffleIsAPermutationPerEpochAndDeterministic) {
  TempDir dir;
  auto data = make_dataset(dir.file("d"), numbered_docs({40, 33, 50, 17}));
  GPTDataset a(data, opts(3, SplitPart::kAll, true));
  GPTDataset b(data, opts(3, SplitPart::kAll, true));
  auto other = opts(3, SplitPart::kAll, true);
  other.seed = 99;
  GPTDataset c(data, other);
  const int64_t n = a.num_samples();
  std::vector<int64_t> e0, e1, seeded;
  for (int64_t i = 0; i < n; ++i) {
    e0.push_back(a.sample_for(i));
    e1.push_back(a.sample_for(n + i));
    seeded.push_back(c.sample_for(i));
    EXPECT_EQ(sample(a, i), sample(b, i));
    EXPECT_EQ(b.sample_for(n + i), e1.back());  // b reaches epoch 1 without visiting epoch 0
  }
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = i;
  for (auto* perm : {&e0, &e1, &seeded}) {
    std::vector<int64_t> sorted = *perm;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, ids);
  }
  EXPECT_NE(e0, ids);
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, seeded);
}

TEST(GPTDatasetTest, ShuffleIsPinnedAcrossPlatformsAndReleases) {
  // Data order is part of reproducibility (resume, layout changes, other machines): the exact
  // permutation is fixed by mt19937_64 and a hand-written Fisher-Yates, so pin it.
  EXPECT_EQ(shuffled_indices(10, 1234, 0), (std::vector<int64_t>{4, 2, 3, 1, 9, 5, 6, 8, 0, 7}));
  EXPECT_EQ(shuffled_indices(10, 1234, 1), (std::vector<int64_t>{0, 5, 6, 3, 4, 7, 8, 2, 1, 9}));
  EXPECT_EQ(shuffled_indices(1, 5, 0), (std::vector<int64_t>{0}));
  EXPECT_TRUE(shuffled_indices(0, 5, 0).empty());
}

TEST(GPTDatasetTest, SplitFollowsMegatronRounding) {
  EXPECT_EQ(split_documents("98,2", SplitPart::kTrain, 100),
            std::make_pair(int64_t{0}, int64_t{98}));
  EXPECT_EQ(split_documents("98,2", SplitPart::kValid, 100),
            std::make_pair(int64_t{98}, int64_t{100}));
  // Python's round is half-to-even: 1.5 -> 2, 2.5 -> 2.
  EXPECT_EQ(split_documents("1,1", SplitPart::kTrain, 3), std::make_pair(int64_t{0}, int64_t{2}));
  EXPECT_EQ(split_documents("1,1", SplitPart::kTrain, 5), std::make_pair(int64_t{0}, int64_t{2}));
  EXPECT_EQ(split_documents("1,1", SplitPart::kValid, 5), std::make_pair(int64_t{2}, int64_t{5}));
  EXPECT_EQ(split_documents("949,50,1", SplitPart::kValid, 1000),
            std::make_pair(int64_t{949}, int64_t{999}));
  EXPECT_EQ(split_documents("100", SplitPart::kValid, 7), std::make_pair(int64_t{7}, int64_t{7}));
  EXPECT_EQ(split_documents("anything", SplitPart::kAll, 7),
            std::make_pair(int64_t{0}, int64_t{7}));
  for (const char* bad : {"", "98,", "a,b", "-1,2", "0,0", "1,1,1,1"}) {
    EXPECT_NE(error_of([&] { split_documents(bad, SplitPart::kTrain, 10); }).find("data.split"),
              std::string::npos)
        << bad;
  }
}

TEST(GPTDatasetTest, TrainAndValidAreDisjointAndCoverEverything) {
  TempDir dir;
  std::vector<int> lengths(20, 9);
  auto data = make_dataset(dir.file("d"), numbered_docs(lengths));
  GPTDataset train(data, opts(4, SplitPart::kTrain, true, "80,20"));
  GPTDataset valid(data, opts(4, SplitPart::kValid, true, "80,20"));
  EXPECT_EQ(train.first_document(), 0);
  EXPECT_EQ(train.end_document(), 16);
  EXPECT_EQ(valid.first_document(), 16);
  EXPECT_EQ(valid.end_document(), 20);
  std::set<int64_t> train_docs, valid_docs;
  for (int64_t i = 0; i < train.num_samples(); ++i)
    for (int64_t t : sample(train, i)) train_docs.insert(t / 1000);
  for (int64_t i = 0; i < valid.num_samples(); ++i)
    for (int64_t t : sample(valid, i)) valid_docs.insert(t / 1000);
  EXPECT_EQ(*train_docs.rbegin(), 15);
  EXPECT_EQ(*valid_docs.begin(), 16);
  EXPECT_EQ(train_docs.size() + valid_docs.size(), 20u);
}

TEST(GPTDatasetTest, TooFewTokensNamesPrefixSplitAndCount) {
  TempDir dir;
  const std::string prefix = dir.file("small");
  auto data = make_dataset(prefix, numbered_docs({10, 10, 10, 10, 3}));
  std::string msg = error_of([&] { GPTDataset(data, opts(8, SplitPart::kValid, true, "80,20")); });
  EXPECT_NE(msg.find(prefix), std::string::npos) << msg;
  EXPECT_NE(msg.find("80,20"), std::string::npos) << msg;
  EXPECT_NE(msg.find("has 3 tokens"), std::string::npos) << msg;
  msg = error_of([&] { GPTDataset(data, opts(43, SplitPart::kAll, true)); });
  EXPECT_NE(msg.find("has 43 tokens, but one sample needs seq_len + 1 = 44"), std::string::npos) << msg;
  GPTDataset fits(data, opts(42, SplitPart::kAll, true));  // 43 tokens = exactly one sample
  EXPECT_EQ(fits.num_samples(), 1);
}

TEST(GPTDatasetTest, MakeBatchStacksSamples) {
  TempDir dir;
  auto data = make_dataset(dir.file("d"), numbered_docs({30, 30}), kDtypeUInt16);
  GPTDataset ds(data, opts(5, SplitPart::kAll, true));
  at::Tensor batch = make_batch(ds, 7, 4, 5);  // (B=4, T+1=6)
  ASSERT_EQ(batch.sizes(), (at::IntArrayRef{4, 6}));
  EXPECT_EQ(batch.scalar_type(), at::kLong);
  for (int64_t r = 0; r < 4; ++r) {
    std::vector<int64_t> row(batch[r].data_ptr<int64_t>(), batch[r].data_ptr<int64_t>() + 6);
    EXPECT_EQ(row, sample(ds, 7 + r));
  }
  const std::string msg = error_of([&] { make_batch(ds, 0, 1, 6); });
  EXPECT_NE(msg.find("make_batch: seq_len 6 differs from the dataset's 5"), std::string::npos) << msg;
}

TEST(GPTDatasetTest, ConcurrentReadsMatchSequential) {
  TempDir dir;
  auto data = make_dataset(dir.file("d"), numbered_docs({500, 300, 700}));
  GPTDataset ds(data, opts(16, SplitPart::kAll, true));
  const int64_t n = 4 * ds.num_samples();  // several epochs, so permutations are evicted
  std::vector<std::vector<int64_t>> want;
  for (int64_t i = 0; i < n; ++i) want.push_back(sample(ds, i));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t i = t; i < n; i += 3)
        mismatches[t] += sample(ds, (i * 7) % n) != want[(i * 7) % n];
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, (std::vector<int>{0, 0, 0, 0}));
}

// ---- blends ----------------------------------------------------------------------------------

// A source whose sample i is [tag, i, i, ...]: shows which source and which sample was used.
class TaggedSource : public SampleSource {
 public:
  TaggedSource(int64_t tag, int64_t n, int64_t seq_len) : tag_(tag), n_(n), seq_len_(seq_len) {}
  int64_t num_samples() const override { return n_; }
  int64_t seq_len() const override { return seq_len_; }
  void get(int64_t index, int64_t* out) const override {
    out[0] = tag_;
    for (int64_t j = 1; j <= seq_len_; ++j) out[j] = index;
  }

 private:
  int64_t tag_, n_, seq_len_;
};

TEST(BlendedDatasetTest, ProportionsHoldForEveryPrefix) {
  std::vector<std::shared_ptr<const SampleSource>> sources = {
      std::make_shared<TaggedSource>(0, 100, 2), std::make_shared<TaggedSource>(1, 50, 2),
      std::make_shared<TaggedSource>(2, 10, 2)};
  BlendedDataset blend(sources, {5.0, 3.0, 2.0});  // normalised to 0.5 / 0.3 / 0.2
  EXPECT_DOUBLE_EQ(blend.weights()[1], 0.3);
  EXPECT_EQ(blend.num_samples(), 160);
  std::vector<int64_t> counts(3, 0);
  const int64_t n = 3 * BlendedDataset::kChunk + 17;
  for (int64_t i = 0; i < n; ++i) {
    auto s = sample(blend, i);
    // Each source is consumed in order, across its own epochs (source 2 has only 10 samples).
    ASSERT_EQ(s[1], counts[s[0]]) << "global sample " << i;
    ++counts[s[0]];
    for (int k = 0; k < 3; ++k) {
      ASSERT_LE(std::abs(counts[k] - blend.weights()[k] * (i + 1)), 1.0)
          << "source " << k << " after " << i + 1 << " samples";
    }
  }
}

TEST(BlendedDatasetTest, SkewedWeightsStayClose) {
  std::vector<std::shared_ptr<const SampleSource>> sources;
  std::vector<double> weights = {0.001, 3, 0.5, 0.02, 7, 1e-4};
  for (int k = 0; k < 6; ++k) sources.push_back(std::make_shared<TaggedSource>(k, 11, 1));
  BlendedDataset blend(sources, weights);
  std::vector<int64_t> counts(6, 0);
  double worst = 0;
  for (int64_t i = 0; i < 20000; ++i) {
    ++counts[blend.locate(i).first];
    for (int k = 0; k < 6; ++k)
      worst = std::max(worst, std::abs(counts[k] - blend.weights()[k] * (i + 1)));
  }
  EXPECT_LT(worst, 2.0);
}

TEST(BlendedDatasetTest, RandomAccessMatchesSequential) {
  std::vector<std::shared_ptr<const SampleSource>> sources = {
      std::make_shared<TaggedSource>(0, 7, 1), std::make_shared<TaggedSource>(1, 9, 1)};
  BlendedDataset seq(sources, {0.7, 0.3});
  std::vector<std::pair<int, int64_t>> want;
  const int64_t n = 5 * BlendedDataset::kChunk;
  for (int64_t i = 0; i < n; ++i) want.push_back(seq.locate(i));
  BlendedDataset jumpy(sources, {0.7, 0.3});
  for (int64_t i : {n - 1, int64_t{3}, 2 * BlendedDataset::kChunk + 5, int64_t{0}, n / 2}) {
    EXPECT_EQ(jumpy.locate(i), want[i]) << i;
  }
  // A far jump works too and agrees with the greedy counts: about 70% went to source 0.
  BlendedDataset far(sources, {0.7, 0.3});
  auto [k, s] = far.locate(1000003);
  EXPECT_NEAR(static_cast<double>(s), (k == 0 ? 0.7 : 0.3) * 1000003, 2.0);
}

TEST(BlendedDatasetTest, RejectsBadInputs) {
  auto a = std::make_shared<TaggedSource>(0, 5, 3);
  auto b = std::make_shared<TaggedSource>(1, 5, 4);
  EXPECT_NE(error_of([&] { BlendedDataset({a, b}, {1, 1}); }).find("seq_len"), std::string::npos);
  EXPECT_NE(error_of([&] { BlendedDataset({a, a}, {1, -1}); }).find("weight"), std::string::npos);
  std::string msg = error_of([&] { BlendedDataset({a, a}, {0, 0}); });
  EXPECT_NE(msg.find("the weights sum to 0"), std::string::npos) << msg;
  msg = error_of([&] { BlendedDataset({a}, {1, 2}); });
  EXPECT_NE(msg.find("1 datasets but 2 weights"), std::string::npos) << msg;
  msg = error_of([&] { BlendedDataset({}, {}); });
  EXPECT_NE(msg.find("needs at least one dataset"), std::string::npos) << msg;
}

TEST(OpenTrainingDataTest, ChecksVocabAndParsesBlends) {
  TempDir dir;
  make_dataset(dir.file("a"), numbered_docs({40, 40}));  // max token 1039
  make_dataset(dir.file("b"), numbered_docs({30, 30}));  // max token 1029
  GPTDatasetOptions o = opts(8, SplitPart::kAll, true);
  std::string msg = error_of([&] { open_training_data(dir.file("a"), {}, o, 1000); });
  EXPECT_NE(msg.find(dir.file("a")), std::string::npos) << msg;
  EXPECT_NE(msg.find("1039"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.vocab_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokenizer"), std::string::npos) << msg;

  auto single = open_training_data(dir.file("a"), {}, o, 1040);
  EXPECT_EQ(single->num_samples(), (80 - 1) / 8);
  auto blend = open_training_data("", {"0.25", dir.file("a"), " 0.75 ", dir.file("b")}, o, 1040);
  auto* blended = dynamic_cast<BlendedDataset*>(blend.get());
  ASSERT_NE(blended, nullptr);
  EXPECT_DOUBLE_EQ(blended->weights()[1], 0.75);
  EXPECT_EQ(make_batch(*blend, 0, 3, 8).size(0), 3);

  msg = error_of([&] { open_training_data("", {}, o, 2000); });
  EXPECT_NE(msg.find("set exactly one of data.prefix and data.blend (got neither)"), std::string::npos)
      << msg;
  msg = error_of([&] { open_training_data(dir.file("a"), {"1", dir.file("b")}, o, 2000); });
  EXPECT_NE(msg.find("(got both)"), std::string::npos) << msg;
  msg = error_of([&] { open_training_data("", {"1", dir.file("a"), "x"}, o, 2000); });
  EXPECT_NE(msg.find("data.blend must alternate weight and prefix"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got 3 entries"), std::string::npos) << msg;
  msg = error_of([&] { open_training_data("", {"heavy", dir.file("a")}, o, 2000); });
  EXPECT_NE(msg.find("data.blend entry 0 (\"heavy\") must be a weight"), std::string::npos) << msg;
  msg = error_of([&] {
    open_training_data("", {"1", dir.file("a"), "1", dir.file("b")}, o, 1035);
  });
  EXPECT_NE(msg.find(dir.file("a")), std::string::npos) << msg;
}

}  // namespace
}  // namespace weft
