//! A restricted unpickler: it turns the pickle programs `torch.save` writes (the `data.pkl`
//! of a PyTorch zip checkpoint) into plain data and never imports, calls or evaluates
//! anything.
//!
//! Why a reader of our own: Python's unpickler executes whatever callables a pickle names
//! (`os.system` included), and libtorch's loader accepts only flat dicts of tensors. Here
//! every opcode builds a [`Value`]:
//!
//! - `GLOBAL` / `STACK_GLOBAL` become a name ([`Value::Global`]), nothing is imported;
//! - `REDUCE`, `NEWOBJ`, `INST`, `OBJ` become a record of the callable and its arguments
//!   ([`Object`]); `BUILD`, `SETITEM(S)`, `APPEND(S)` on such a record store the state and
//!   items in it;
//! - `BINPERSID` / `PERSID` keep the persistent id ([`Value::PersistentId`]): in torch
//!   checkpoints, the reference to a tensor storage.
//!
//! What a record means (a tensor, an `OrderedDict`) is decided by the caller from a
//! whitelist of names (`model::pth`); any other record stays opaque data.
//!
//! Opcode semantics follow CPython's `Lib/pickletools.py` (protocols 0 to 5, without
//! out-of-band buffers and extension registries, which `torch.save` does not emit).
//! Containers are shared (`Rc<RefCell<..>>`) so that a memo reference (`BINGET`) sees the
//! items added after the container was memoised, as in Python.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A mutable container shared between the stack and the memo.
pub type Shared<T> = Rc<RefCell<T>>;

/// A pickled value, as data.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A larger integer: little-endian two's complement bytes (`LONG1` / `LONG4`).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A bytes object (or a Python 2 string that is not UTF-8).
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list (sets and frozensets are read as lists too).
    List(Shared<Vec<Value>>),
    /// A dict: its items in insertion order.
    Dict(Shared<Vec<(Value, Value)>>),
    /// A name a pickle refers to (`module.name`); never imported.
    Global { module: String, name: String },
    /// A call the pickle asks for (`REDUCE`, `NEWOBJ`, ...); never made.
    Object(Shared<Object>),
    /// A persistent id (`BINPERSID`): torch's reference to a storage record.
    PersistentId(Box<Value>),
}

/// A call recorded instead of made, with what the pickle then did to its result.
#[derive(Debug, Clone)]
pub struct Object {
    /// The callable (usually a [`Value::Global`]).
    pub callable: Value,
    /// Its positional arguments (a tuple).
    pub args: Value,
    /// The state given by `BUILD`, if any.
    pub state: Option<Value>,
    /// Items given by `SETITEM(S)` (e.g. an `OrderedDict`'s entries).
    pub dict_items: Vec<(Value, Value)>,
    /// Items given by `APPEND(S)`.
    pub list_items: Vec<Value>,
}

impl Object {
    /// `module.name` of the callable when it is a global.
    pub fn callable_name(&self) -> Option<String> {
        match &self.callable {
            Value::Global { module, name } => Some(format!("{module}.{name}")),
            _ => None,
        }
    }

    /// The positional arguments as a slice (empty when they are not a tuple).
    pub fn arg_slice(&self) -> &[Value] {
        match &self.args {
            Value::Tuple(v) => v,
            _ => &[],
        }
    }
}

impl Value {
    /// The text of a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer of a [`Value::Int`] (or a bool, as Python treats it).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// A short description for error messages: `int`, `str`, `dict of 3 entries`,
    /// `` `argparse.Namespace` object ``.
    pub fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(v) => format!("tuple of {}", v.len()),
            Value::List(v) => format!("list of {}", v.borrow().len()),
            Value::Dict(v) => format!("dict of {} entries", v.borrow().len()),
            Value::Global { module, name } => format!("the name `{module}.{name}`"),
            Value::Object(o) => match o.borrow().callable_name() {
                Some(name) => format!("`{name}` object"),
                None => "object".into(),
            },
            Value::PersistentId(_) => "persistent id".into(),
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The program ended before `STOP` or inside an argument.
    #[error("pickle truncated at byte {offset}")]
    Truncated { offset: usize },
    /// An opcode this reader does not interpret.
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {offset}")]
    UnsupportedOpcode { opcode: u8, offset: usize },
    /// The program is malformed (stack underflow, a `MARK` missing, a bad memo index, ...).
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
}

/// Reads one pickle program (up to its `STOP`) into a [`Value`] without executing it.
///
/// Errors: [`PickleError`] with the byte offset of the offending opcode.
pub fn read(data: &[u8]) -> Result<Value, PickleError> {
    Machine::new(data).run()
}

/// A stack entry: a value or a `MARK`.
enum Slot {
    Mark,
    Value(Value),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed (for errors).
    at: usize,
    stack: Vec<Slot>,
    memo: HashMap<u64, Value>,
}

fn shared<T>(t: T) -> Shared<T> {
    Rc::new(RefCell::new(t))
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            at: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            offset: self.at,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated { offset: self.at })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len_u64(&mut self) -> Result<usize, PickleError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| PickleError::Truncated { offset: self.at })
    }

    /// A `\n`-terminated line (protocol 0 arguments), without the newline.
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated { offset: self.at })?;
        let line = &rest[..n];
        self.pos += n + 1;
        std::str::from_utf8(line).map_err(|_| self.malformed("a text argument is not UTF-8"))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Slot::Value(v));
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Slot::Value(v)) => Ok(v),
            Some(Slot::Mark) => Err(self.malformed("a value was expected, found a MARK")),
            None => Err(self.malformed("stack underflow")),
        }
    }

    fn top(&self) -> Result<&Value, PickleError> {
        match self.stack.last() {
            Some(Slot::Value(v)) => Ok(v),
            Some(Slot::Mark) => Err(self.malformed("a value was expected, found a MARK")),
            None => Err(self.malformed("stack underflow")),
        }
    }

    /// Pops everything above the topmost `MARK`, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let at = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| self.malformed("no MARK on the stack"))?;
        let items = self
            .stack
            .split_off(at + 1)
            .into_iter()
            .map(|s| match s {
                Slot::Value(v) => v,
                Slot::Mark => unreachable!("the topmost mark is at `at`"),
            })
            .collect();
        self.stack.pop();
        Ok(items)
    }

    fn memo_get(&self, index: u64) -> Result<Value, PickleError> {
        self.memo
            .get(&index)
            .cloned()
            .ok_or_else(|| self.malformed(format!("memo entry {index} is not defined")))
    }

    fn memo_put(&mut self, index: u64) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.memo.insert(index, v);
        Ok(())
    }

    fn string(&self, bytes: &[u8]) -> Result<Value, PickleError> {
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(s.to_owned()))
            .map_err(|_| self.malformed("a unicode string is not UTF-8"))
    }

    /// Python 2 `str`: text when it is UTF-8, bytes otherwise.
    fn py2_string(bytes: &[u8]) -> Value {
        match std::str::from_utf8(bytes) {
            Ok(s) => Value::Str(s.to_owned()),
            Err(_) => Value::Bytes(bytes.to_vec()),
        }
    }

    fn long(bytes: &[u8]) -> Value {
        if bytes.is_empty() {
            return Value::Int(0);
        }
        if bytes.len() <= 8 {
            let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
                0xff
            } else {
                0
            };
            let mut a = [fill; 8];
            a[..bytes.len()].copy_from_slice(bytes);
            return Value::Int(i64::from_le_bytes(a));
        }
        Value::BigInt(bytes.to_vec())
    }

    fn object(callable: Value, args: Value) -> Value {
        Value::Object(shared(Object {
            callable,
            args,
            state: None,
            dict_items: Vec::new(),
            list_items: Vec::new(),
        }))
    }

    fn set_items(&mut self, target: &Value, items: Vec<(Value, Value)>) -> Result<(), PickleError> {
        match target {
            Value::Dict(d) => d.borrow_mut().extend(items),
            Value::Object(o) => o.borrow_mut().dict_items.extend(items),
            other => {
                return Err(self.malformed(format!("SETITEM on {}", other.describe())));
            }
        }
        Ok(())
    }

    fn append(&mut self, target: &Value, items: Vec<Value>) -> Result<(), PickleError> {
        match target {
            Value::List(l) => l.borrow_mut().extend(items),
            Value::Object(o) => o.borrow_mut().list_items.extend(items),
            other => return Err(self.malformed(format!("APPEND on {}", other.describe()))),
        }
        Ok(())
    }

    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("an odd number of items for a dict"));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            self.at = self.pos;
            let op = self.u8()?;
            match op {
                // PROTO
                0x80 => {
                    let v = self.u8()?;
                    if v > 5 {
                        return Err(self.malformed(format!("pickle protocol {v} is unknown")));
                    }
                }
                // FRAME: a length prefix only.
                0x95 => {
                    self.u64()?;
                }
                // STOP
                b'.' => return self.pop(),
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                // BININT1, BININT2, BININT
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(i64::from(v)));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)));
                }
                // LONG1, LONG4
                0x8a => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.push(Self::long(b));
                }
                0x8b => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push(Self::long(b));
                }
                // INT, LONG (protocol 0 text)
                b'I' | b'L' => {
                    let line = self.line()?;
                    let v = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => s
                            .trim_end_matches('L')
                            .parse::<i64>()
                            .map(Value::Int)
                            .map_err(|_| self.malformed(format!("integer `{s}`")))?,
                    };
                    self.push(v);
                }
                // BINFLOAT (big-endian), FLOAT (text)
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'F' => {
                    let line = self.line()?;
                    let v = line
                        .parse::<f64>()
                        .map_err(|_| self.malformed(format!("float `{line}`")))?;
                    self.push(Value::Float(v));
                }
                // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    let v = self.string(b)?;
                    self.push(v);
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    let v = self.string(b)?;
                    self.push(v);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    let v = self.string(b)?;
                    self.push(v);
                }
                // BINSTRING, SHORT_BINSTRING (Python 2 str)
                b'T' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push(Self::py2_string(b));
                }
                b'U' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.push(Self::py2_string(b));
                }
                // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push(Value::Bytes(b.to_vec()));
                }
                b'C' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.push(Value::Bytes(b.to_vec()));
                }
                0x8e | 0x96 => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    self.push(Value::Bytes(b.to_vec()));
                }
                // Containers.
                b'}' => self.push(Value::Dict(shared(Vec::new()))),
                b']' => self.push(Value::List(shared(Vec::new()))),
                b')' => self.push(Value::Tuple(Vec::new())),
                // EMPTY_SET: read as a list.
                0x8f => self.push(Value::List(shared(Vec::new()))),
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Value::Dict(shared(pairs)));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(shared(items)));
                }
                // FROZENSET: read as a list.
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(shared(items)));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(self.malformed("stack underflow"));
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, vec![(k, v)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let target = self.top()?.clone();
                    self.set_items(&target, pairs)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    let target = self.top()?.clone();
                    self.append(&target, vec![v])?;
                }
                // APPENDS, ADDITEMS (sets are lists here)
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.append(&target, items)?;
                }
                // Memo.
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(u64::from(i))?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(u64::from(i))?;
                }
                b'p' => {
                    let line = self.line()?;
                    let i = line
                        .parse::<u64>()
                        .map_err(|_| self.malformed(format!("memo index `{line}`")))?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    let v = self.memo_get(u64::from(i))?;
                    self.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(u64::from(i))?;
                    self.push(v);
                }
                b'g' => {
                    let line = self.line()?;
                    let i = line
                        .parse::<u64>()
                        .map_err(|_| self.malformed(format!("memo index `{line}`")))?;
                    let v = self.memo_get(i)?;
                    self.push(v);
                }
                // Names: recorded, never imported.
                b'c' => {
                    let module = self.line()?.to_owned();
                    let name = self.line()?.to_owned();
                    self.push(Value::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            self.push(Value::Global { module, name })
                        }
                        _ => return Err(self.malformed("STACK_GLOBAL needs two strings")),
                    }
                }
                // Calls: recorded, never made.
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.push(Self::object(callable, args));
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.push(Self::object(cls, args));
                }
                // NEWOBJ_EX: keyword arguments are dropped with the call.
                0x92 => {
                    self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.push(Self::object(cls, args));
                }
                b'i' => {
                    let module = self.line()?.to_owned();
                    let name = self.line()?.to_owned();
                    let args = self.pop_mark()?;
                    self.push(Self::object(
                        Value::Global { module, name },
                        Value::Tuple(args),
                    ));
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err(self.malformed("OBJ without a class"));
                    }
                    let cls = items.remove(0);
                    self.push(Self::object(cls, Value::Tuple(items)));
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top()? {
                        Value::Object(o) => o.borrow_mut().state = Some(state),
                        other => {
                            return Err(self.malformed(format!("BUILD on {}", other.describe())))
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::PersistentId(Box::new(pid)));
                }
                b'P' => {
                    let line = self.line()?.to_owned();
                    self.push(Value::PersistentId(Box::new(Value::Str(line))));
                }
                opcode => {
                    return Err(PickleError::UnsupportedOpcode {
                        opcode,
                        offset: self.at,
                    })
                }
            }
        }
    }
}
