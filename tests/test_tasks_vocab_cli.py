"""`brainformer vocab` trains a SentencePiece model that the tasks can use."""

import sentencepiece as spm

from brainformer_tf.cli import main


def test_vocab_command_trains_a_model_on_the_given_files(tmp_path, capsys):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n\n".join(
      f"The quick brown fox {i} jumps over the lazy dog number {i}." for i in range(300)))
  output = tmp_path / "out" / "my.model"
  assert main.main(["brainformer", "vocab", f"--output={output}", "--vocab_size=400",
                    str(tmp_path / "*.txt")]) == 0
  assert "wrote" in capsys.readouterr().out
  sp = spm.SentencePieceProcessor(model_file=str(output))
  assert 298 < sp.get_piece_size() <= 400  # 256 byte pieces + characters + merges
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
  assert sp.decode(sp.encode("The lazy dog jumps.")) == "The lazy dog jumps."


def test_vocab_command_reports_missing_files(tmp_path, capsys):
  code = main.main(["brainformer", "vocab", f"--output={tmp_path}/x.model",
                    str(tmp_path / "nothing*.txt")])
  assert code == 2
  assert "no text file matches" in capsys.readouterr().err
