// The line editor of natter chat: libedit's editing and history on a
// terminal, with room for output that arrives while a line is being typed.
//
// ReadLine blocks like el_gets(3), but it waits for each key through the
// caller's wait function, which may meanwhile print with PrintAbove: the
// line being typed is taken off the screen, the text written, and the
// prompt and the line (cursor where it was) drawn again below it, so
// arriving messages never garble what the user types.
//
// When standard input or output is not a terminal there is no editing and
// no cursor movement: lines are read and printed as they are (a script may
// drive natter chat through a pipe).
//
// Not thread-safe: one thread, one terminal.
#ifndef NATTER_CLIENT_LINE_EDITOR_H_
#define NATTER_CLIENT_LINE_EDITOR_H_

#include <functional>
#include <optional>
#include <string>

struct editline;
struct history;

namespace natter {

class LineEditor {
 public:
  // Returns true when standard input has something to read, false when
  // reading should stop (ReadLine then returns nullopt).
  using Wait = std::function<bool()>;

  // history_file: where the typed lines are kept between runs (may be
  // empty: not kept).
  LineEditor(std::string prompt, std::string history_file, Wait wait);
  ~LineEditor();
  LineEditor(const LineEditor&) = delete;
  LineEditor& operator=(const LineEditor&) = delete;

  // The next line typed, without its newline, its echo taken off the
  // screen (the caller shows it as it likes); nullopt at the end of input
  // or when the wait function said stop.
  std::optional<std::string> ReadLine();

  // Prints text (one or more lines, no trailing newline) above the line
  // being typed, or plainly when no line is being read.
  void PrintAbove(const std::string& text);

  // The terminal changed size (from a SIGWINCH handler's flag).
  void Resized();

  bool interactive() const { return interactive_; }
  // Rows of the terminal (24 when it does not say).
  int Rows() const;

 private:
  static int GetChar(editline* el, wchar_t* out);
  // Columns of the terminal.
  int Columns() const;
  // Rows from the prompt's start to the cursor.
  int RowsToCursor() const;
  void Write(const std::string& s);

  std::string prompt_;
  std::string history_file_;
  Wait wait_;
  bool interactive_ = false;
  bool reading_ = false;  // inside el_gets: a line is on the screen
  bool stopped_ = false;
  editline* el_ = nullptr;
  history* hist_ = nullptr;
};

// Columns a UTF-8 string takes on a terminal (wide characters count 2).
int DisplayWidth(const std::string& utf8);

}  // namespace natter

#endif  // NATTER_CLIENT_LINE_EDITOR_H_
