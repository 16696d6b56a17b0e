"""A deterministic offline tokenizer: no model files, identical ids in every process.

The vocabulary is built from fixed tables in a fixed order, so two simulator replicas and the
routers that hash prompts agree on token ids without sharing anything. Text is split like GPT-2's
pre-tokenizer (an optional leading space plus a word, a number or a punctuation run); a piece in
the vocabulary is one token, other words fall back to 1–3-letter chunks and, for anything else,
to UTF-8 byte tokens, so ``decode(encode(text)) == text`` for every string (special tokens aside).
English text averages about 4–5 characters per token.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Sequence
from functools import cached_property, lru_cache
from typing import Literal

ChatTemplateName = Literal["llama3", "chatml"]

# Special tokens of the two chat-template families the presets imitate (Llama 3, ChatML).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Frequent English words: each (with and without a leading space, lower and capitalised) is one
# token, and generated text is drawn from them.
COMMON_WORDS: tuple[str, ...] = _words(
    """
the of and to a in is it you that he was for on are with as I his they be at one have this from
or had by not word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her long
make thing see him two has look more day could go come did number sound no most people my over
know water than call first who may down side been now find any new work part take get place made
live where after back little only round man year came show every good me give our under name
very through just form sentence great think say help low line differ turn cause much mean before
move right boy old too same tell does set three want air well also play small end put home read
hand port large spell add even land here must big high such follow act why ask men change went
light kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant cover
food sun four between state keep eye never last let thought city tree cross farm hard start
might story saw far sea draw left late run while press close night real life few north open seem
together next white children begin got walk example ease paper group always music those both
mark often letter until mile river car feet care second book carry took science eat room friend
began idea fish mountain stop once base hear horse cut sure watch color face wood main enough
plain girl usual young ready above ever red list though feel talk bird soon body dog family
direct pose leave song measure door product black short numeral class wind question happen
complete ship area half rock order fire south problem piece told knew pass since top whole king
space heard best hour better true during hundred five remember step early hold west ground
interest reach fast verb sing listen six table travel less morning ten simple several vowel
toward war lay against pattern slow center love person money serve appear road map rain rule
govern pull cold notice voice unit power town fine certain fly fall lead cry dark machine note
wait plan figure star box noun field rest correct able pound done beauty drive stood contain
front teach week final gave green quick develop ocean warm free minute strong special mind
behind clear tail produce fact street inch multiply nothing course stay wheel full force blue
object decide surface deep moon island foot system busy test record boat common gold possible
plane stead dry wonder laugh thousand ago ran check game shape equate miss brought heat snow
tire bring yes distant fill east paint language among model data request server token cache
memory network latency route queue batch quickly brown jumps lazy because however another
without within around something nothing everything anything himself herself itself themselves
yourself myself people government company service information business market community history
research development problem question process program policy result level health system value
support report member product office student national political economic social public private
general possible important different large available local likely major recent particular
international natural financial current physical significant similar military medical legal
individual human single original primary standard simple specific central personal effective
federal written rather perhaps already although almost usually actually probably certainly
especially finally generally quite really simply together instead indeed therefore whether
either neither within provide include continue consider require develop describe increase
receive remain suggest understand become believe happen produce allow create expect return
explain report decide include support request response client model models server servers tokens
cache caches memory engine engines scheduler schedule endpoint endpoints picker gateway metrics
prompt prompts output input length context block blocks prefix prefixes replica replicas cluster
pool pools inference latency throughput traffic load balance balancing policy policies routing
router configuration default defaults value values version file files code test tests python
function functions class method methods object objects string strings number numbers list lists
error errors header headers body request requests stream streams event events time times second
seconds minute minutes hour hours today yesterday tomorrow answer answers explain
"""
)

# Frequent sub-word fragments, so rare words cost two or three tokens as with a real BPE.
SUBWORDS: tuple[str, ...] = _words(
    """
tion tions sion ment ments ness less able ible ally ence ance ight ould ther ever ical ation
ations ator ities ity ive ives ous ful ing ings ers est ies ied ely ern ure ures ated ating ize
izes ized izing ise ised ism ist ists ant ants ent ents ial ially ular ory ary ery ward wards
inter trans under over pre pro con com dis mis non sub super auto micro multi semi anti self
able ably ship hood dom ward some like wise ling let ette ess ward
"""
)

# Frequent punctuation and whitespace runs (each one token).
# fmt: off
PUNCTUATION: tuple[str, ...] = (
    ", ", ". ", ".\n", ".\n\n", "\n\n", "\n\n\n", "  ", "   ", "    ", "        ", " (", ") ", ": ", "?", "!",
    " -", " --", " —", " –", "--", "->", "=>", "==", "!=", "<=", ">=", "()", "):", "),", ").", ");", '",',
    '".', ' "', '":', '="', "**", " **", "`", " `", "``", "```", "`,", "`.", " [", "](", "],", " {", '{"',
    '"}', "}}", "{{", " =", " +", " *", " /", " #", "##", "###", " |", "|\n", " ~", "...", "'s", "'t", "'re",
    "'ve", "'ll", "'d", "'m", "%", " %", " $", "_", "__", " <", " >", " &",
)
# fmt: on

_WORD_PATTERN = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[A-Za-z]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


class Tokenizer:
    """Text ↔ token ids with a fixed vocabulary, special tokens and a chat template."""

    def __init__(self, chat_template: ChatTemplateName = "llama3") -> None:
        self.chat_template_name: ChatTemplateName = chat_template
        pieces: list[bytes] = [bytes([value]) for value in range(256)]
        pieces.extend(token.encode() for token in SPECIAL_TOKENS)
        self.special_ids: dict[str, int] = {token: 256 + i for i, token in enumerate(SPECIAL_TOKENS)}
        self._special_id_set = frozenset(self.special_ids.values())
        text_pieces: list[str] = []
        letters = string.ascii_lowercase
        for length in (1, 2, 3):
            for combo in itertools.product(letters, repeat=length):
                chunk = "".join(combo)
                text_pieces.extend((chunk, " " + chunk, chunk.capitalize(), " " + chunk.capitalize()))
        text_pieces.extend(f"{number}" for number in range(1000))
        text_pieces.extend(f" {number}" for number in range(1000))
        for word in COMMON_WORDS:
            text_pieces.extend((word, " " + word, word.capitalize(), " " + word.capitalize()))
        text_pieces.extend(SUBWORDS)
        text_pieces.extend(" " + fragment for fragment in SUBWORDS)
        text_pieces.extend(PUNCTUATION)
        self._id_of: dict[str, int] = {}
        for piece in text_pieces:
            encoded = piece.encode()
            if piece in self._id_of or len(encoded) == 1:
                continue  # single ASCII characters already are byte tokens
            self._id_of[piece] = len(pieces)
            pieces.append(encoded)
        for value in range(128):  # ASCII characters map to their byte token
            self._id_of.setdefault(chr(value), value)
        self._pieces: tuple[bytes, ...] = tuple(pieces)
        self.vocab_size: int = len(pieces)
        if chat_template == "llama3":
            self.bos_token_id: int | None = self.special_ids["<|begin_of_text|>"]
            self.eos_token_ids = frozenset({self.special_ids["<|eot_id|>"], self.special_ids["<|end_of_text|>"]})
            self.eos_token_id = self.special_ids["<|eot_id|>"]
        else:
            self.bos_token_id = None
            self.eos_token_ids = frozenset({self.special_ids["<|im_end|>"], self.special_ids["<|endoftext|>"]})
            self.eos_token_id = self.special_ids["<|im_end|>"]
        self._special_pattern = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")
        # Tokens that generated text is drawn from: common words with a leading space.
        self.word_token_ids: tuple[int, ...] = tuple(self._id_of[" " + word] for word in COMMON_WORDS)
        self.capitalized_word_token_ids: tuple[int, ...] = tuple(
            self._id_of[" " + word.capitalize()] for word in COMMON_WORDS
        )
        self.first_word_token_ids: tuple[int, ...] = tuple(
            self._id_of[word.capitalize()] for word in COMMON_WORDS if len(word) > 1
        )
        self.comma_token_id: int = ord(",")
        self.period_token_id: int = ord(".")

    # -- encoding -------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; special-token strings become their special ids.

        With ``add_special_tokens`` a BOS token is prepended (Llama 3 template only) unless the
        text already starts with one, so a rendered chat prompt never gets two.
        """
        ids: list[int] = []
        if add_special_tokens and self.bos_token_id is not None and not text.startswith("<|begin_of_text|>"):
            ids.append(self.bos_token_id)
        if "<|" in text:
            for index, part in enumerate(self._special_pattern.split(text)):
                if index % 2:
                    ids.append(self.special_ids[part])
                elif part:
                    self._encode_plain(part, ids)
        else:
            self._encode_plain(text, ids)
        return ids

    def _encode_plain(self, text: str, out: list[int]) -> None:
        id_of = self._id_of
        for piece in _WORD_PATTERN.findall(text):
            token = id_of.get(piece)
            if token is not None:
                out.append(token)
            else:
                self._encode_unknown(piece, out)

    def _encode_unknown(self, piece: str, out: list[int]) -> None:
        """Greedy longest chunks (up to 8 characters) from the vocabulary, then UTF-8 bytes."""
        id_of = self._id_of
        position, length = 0, len(piece)
        while position < length:
            for size in (8, 7, 6, 5, 4, 3, 2, 1):
                token = id_of.get(piece[position : position + size])
                if token is not None:
                    out.append(token)
                    position += size
                    break
            else:
                out.extend(piece[position].encode())
                position += 1

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``token_ids``; an incomplete UTF-8 sequence decodes to U+FFFD."""
        pieces = self._pieces
        specials = self._special_id_set
        try:
            if skip_special_tokens:
                data = b"".join(pieces[token] for token in token_ids if token not in specials)
            else:
                data = b"".join(pieces[token] for token in token_ids)
        except IndexError:
            bad = next(token for token in token_ids if not 0 <= token < len(pieces))
            raise ValueError(f"token id {bad} is outside the vocabulary (size {len(pieces)})") from None
        return data.decode("utf-8", errors="replace")

    @cached_property
    def byte_table(self) -> tuple[bytes, ...]:
        """The bytes of every token id, special tokens as ``b""`` (for byte-level detokenizers)."""
        specials = self._special_id_set
        return tuple(b"" if index in specials else piece for index, piece in enumerate(self._pieces))

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_id_set

    # -- chat ------------------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render messages in the Llama 3 or ChatML format (as the imitated models do)."""
        parts: list[str] = []
        if self.chat_template_name == "llama3":
            parts.append("<|begin_of_text|>")
            for message in messages:
                parts.append(f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n")
                parts.append(f"{str(message.get('content') or '').strip()}<|eot_id|>")
            if add_generation_prompt:
                parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        else:
            for message in messages:
                parts.append(f"<|im_start|>{message['role']}\n{message.get('content') or ''}<|im_end|>\n")
            if add_generation_prompt:
                parts.append("<|im_start|>assistant\n")
        return "".join(parts)


@lru_cache(maxsize=4)
def get_tokenizer(chat_template: ChatTemplateName = "llama3") -> Tokenizer:
    """A shared tokenizer per template (building the vocabulary takes a few tens of ms)."""
    return Tokenizer(chat_template)
