// SentencePiece .model files through the SentencePiece C++ library: the library is the
// reference's own code, so ids, offsets and decoding are its.
#include <sentencepiece_processor.h>

#include <algorithm>

#include "weft/error.h"
#include "runtime/data/tokenizer_pipeline.h"

namespace weft {
namespace {

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& file, std::string spec) : file_(file), spec_(std::move(spec)) {
    // Read the file ourselves so a missing file gets the usual message.
    const std::string bytes = read_tokenizer_file(file, "; sp:FILE needs a SentencePiece .model file");
    const auto status = sp_.LoadFromSerializedProto(bytes);
    WEFT_CHECK(status.ok(), file, " is not a SentencePiece model: ", one_line(status.ToString()));
    // hf:DIR reads a model directory as transformers does: the special pieces written in the text
    // ("<s>", "</s>", "<unk>", as a chat template writes them) are those tokens, and the text
    // between them is encoded piece by piece. sp:FILE is the sentencepiece package's encode().
    if (spec_.rfind("hf:", 0) == 0)
      for (int id = 0; id < sp_.GetPieceSize(); ++id)
        if ((sp_.IsControl(id) || sp_.IsUnknown(id)) && !sp_.IdToPiece(id).empty())
          specials_.emplace_back(sp_.IdToPiece(id), id);
  }

  Encoding encode_with_offsets(const std::string& text) const override {
    Encoding enc;
    size_t at = 0;
    while (at <= text.size()) {
      // The earliest special piece from `at` (the longest one there).
      size_t found = std::string::npos, len = 0;
      int id = -1;
      for (const auto& [piece, piece_id] : specials_) {
        const size_t p = text.find(piece, at);
        if (p != std::string::npos && (p < found || (p == found && piece.size() > len)))
          found = p, len = piece.size(), id = piece_id;
      }
      const size_t end = found == std::string::npos ? text.size() : found;
      if (end > at || (at == 0 && found == std::string::npos)) encode_chunk(text, at, end, enc);
      if (found == std::string::npos) break;
      enc.ids.push_back(id);
      enc.offsets.emplace_back(int64_t(found), int64_t(found + len));
      at = found + len;
    }
    return enc;
  }

  std::vector<int64_t> add_special_tokens(const std::vector<int64_t>& ids) const override {
    std::vector<int64_t> out;
    if (sp_.bos_id() >= 0) out.push_back(sp_.bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int> v;
    v.reserve(ids.size());
    for (int64_t id : ids) {
      WEFT_CHECK(id >= 0 && id < vocab_size(), "cannot decode id ", id, ": it is not in ", file_);
      v.push_back(static_cast<int>(id));
    }
    std::string out;
    const auto status = sp_.Decode(v, &out);
    WEFT_CHECK(status.ok(), file_, ": SentencePiece cannot decode: ", one_line(status.ToString()));
    return out;
  }

  int64_t token_to_id(const std::string& token) const override {
    const int id = sp_.PieceToId(token);
    // PieceToId answers unk_id for unknown pieces; only the unk piece itself maps there.
    return id == sp_.unk_id() && sp_.IdToPiece(id) != token ? -1 : id;
  }
  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  int64_t bos_id() const override { return sp_.bos_id(); }
  int64_t eos_id() const override {
    WEFT_CHECK(sp_.eos_id() >= 0, file_, " has no end-of-sequence piece (eos_id is -1); preprocess without "
               "appending eos or use a model trained with one");
    return sp_.eos_id();
  }
  std::string spec() const override { return spec_; }

 private:
  // Appends the pieces of text[begin, end) with offsets into `text`.
  void encode_chunk(const std::string& text, size_t begin, size_t end, Encoding& enc) const {
    sentencepiece::ImmutableSentencePieceText spt;
    const auto status = sp_.Encode(text.substr(begin, end - begin), spt.mutable_proto());
    WEFT_CHECK(status.ok(), file_, ": SentencePiece cannot encode the text: ", one_line(status.ToString()));
    for (const auto& piece : spt.pieces()) {
      enc.ids.push_back(piece.id());
      enc.offsets.emplace_back(int64_t(begin + piece.begin()), int64_t(begin + piece.end()));
    }
  }

  std::string file_, spec_;
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<std::pair<std::string, int>> specials_;  // hf:DIR only: control and unk pieces
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& file, const std::string& spec) {
  return std::make_unique<SentencePieceTokenizer>(file, spec);
}

}  // namespace weft
