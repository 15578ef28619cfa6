#include "client/line_editor.h"

#include <histedit.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cwchar>
#include <stdexcept>

#include "common/text.h"

namespace natter {
namespace {

constexpr int kHistorySize = 1000;

int Width(wchar_t wc) {
  int w = ::wcwidth(wc);
  return w < 0 ? 1 : w;
}

}  // namespace

int DisplayWidth(const std::string& utf8) {
  int width = 0;
  for (size_t i = 0; i < utf8.size();) {
    char32_t c;
    width +=
        Width(NextCodePoint(utf8, &i, &c) ? static_cast<wchar_t>(c) : 0xFFFD);
  }
  return width;
}

LineEditor::LineEditor(std::string prompt, std::string history_file, Wait wait)
    : prompt_(std::move(prompt)),
      history_file_(std::move(history_file)),
      wait_(std::move(wait)) {
  interactive_ = ::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO);
  el_ = el_init("natter", stdin, stdout, stderr);
  if (el_ == nullptr) throw std::runtime_error("libedit could not start");
  hist_ = history_init();
  HistEvent ev;
  ::history(hist_, &ev, H_SETSIZE, kHistorySize);
  ::history(hist_, &ev, H_SETUNIQUE, 1);
  if (!history_file_.empty())
    ::history(hist_, &ev, H_LOAD, history_file_.c_str());
  el_set(el_, EL_CLIENTDATA, this);
  el_set(el_, EL_EDITOR, "emacs");
  el_set(el_, EL_HIST, ::history, hist_);
  el_set(
      el_, EL_PROMPT, +[](EditLine* el) -> char* {
        void* self = nullptr;
        el_get(el, EL_CLIENTDATA, &self);
        return const_cast<char*>(
            static_cast<LineEditor*>(self)->prompt_.c_str());
      });
  el_set(el_, EL_GETCFN, &LineEditor::GetChar);
  // ~/.editrc (or $EDITRC) for the user's bindings, as other libedit
  // programs read it.
  el_source(el_, nullptr);
}

LineEditor::~LineEditor() {
  if (!history_file_.empty()) {
    HistEvent ev;
    ::history(hist_, &ev, H_SAVE, history_file_.c_str());
  }
  el_end(el_);
  history_end(hist_);
}

int LineEditor::GetChar(EditLine* el, wchar_t* out) {
  void* data = nullptr;
  el_get(el, EL_CLIENTDATA, &data);
  auto* self = static_cast<LineEditor*>(data);
  mbstate_t state{};
  for (;;) {
    if (self->stopped_ || !self->wait_()) {
      self->stopped_ = true;
      return 0;
    }
    char c;
    ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return n == 0 ? 0 : -1;
    size_t r = std::mbrtowc(out, &c, 1, &state);
    if (r == static_cast<size_t>(-2)) continue;  // more bytes of one character
    if (r == static_cast<size_t>(-1)) {
      state = mbstate_t{};
      *out = 0xFFFD;
    }
    return 1;
  }
}

int LineEditor::Columns() const {
  struct winsize ws;
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  return 80;
}

int LineEditor::Rows() const {
  struct winsize ws;
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0)
    return ws.ws_row;
  return 24;
}

int LineEditor::RowsToCursor() const {
  const LineInfoW* li = el_wline(el_);
  int width = DisplayWidth(prompt_);
  for (const wchar_t* p = li->buffer; p < li->cursor; ++p) width += Width(*p);
  return width / Columns();
}

void LineEditor::Write(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

std::optional<std::string> LineEditor::ReadLine() {
  if (stopped_) return std::nullopt;
  int count = 0;
  reading_ = true;
  const char* line = el_gets(el_, &count);
  reading_ = false;
  if (line == nullptr || count <= 0 || stopped_) {
    if (interactive_) Write("\n");
    return std::nullopt;
  }
  std::string text(line, static_cast<size_t>(count));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  if (interactive_) {
    if (!text.empty()) {
      HistEvent ev;
      ::history(hist_, &ev, H_ENTER, text.c_str());
    }
    // Take the echoed line off the screen: the caller shows what it made
    // of it.
    int columns = Columns();
    int rows =
        (DisplayWidth(prompt_) + DisplayWidth(text) + columns - 1) / columns;
    if (rows < 1) rows = 1;
    Write("\033[" + std::to_string(rows) + "A\r\033[J");
  }
  return text;
}

void LineEditor::PrintAbove(const std::string& text) {
  if (!interactive_) {
    Write(text + "\n");
    return;
  }
  std::string out;
  if (reading_) {
    int rows = RowsToCursor();
    if (rows > 0) out += "\033[" + std::to_string(rows) + "A";
    out += "\r\033[J";
  }
  // Raw mode may leave out the carriage return of a newline.
  for (char c : text) {
    if (c == '\n') out += '\r';
    out += c;
  }
  out += "\r\n";
  Write(out);
  if (reading_) el_set(el_, EL_REFRESH);
}

void LineEditor::Resized() { el_resize(el_); }

}  // namespace natter
