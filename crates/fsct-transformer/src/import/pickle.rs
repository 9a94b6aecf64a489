//! The restricted pickle machine: the opcodes burn-store supports (protocol 2, as `torch.save`
//! writes it), building the object tree of `value.rs` without tensor data. Calls go through the
//! allow-list of `rebuild.rs`; depth, line length and memo copies are bounded, so a crafted
//! pickle is refused instead of exhausting the stack or memory.

use std::collections::HashMap;
use std::io::BufRead;
use std::rc::Rc;

use super::hint::truncated_hint;
use super::input::Input;
use super::rebuild::{allowed, call, refused, storage_from_id};
use super::value::{seq, Map, Seq, Value};

/// Reads one pickle, up to its `STOP`.
pub(super) fn read_pickle<R: BufRead>(input: &mut Input<R>) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let underflow = |input: &Input<R>| {
        format!(
            "{} is malformed (stack underflow at byte {}): {}",
            input.what,
            input.position,
            truncated_hint()
        )
    };
    macro_rules! pop {
        () => {
            stack.pop().ok_or_else(|| underflow(input))?
        };
    }
    // The memo is copied by value, as burn-store does (Python shares it by reference): values
    // copied in and out are counted, so that a crafted pickle fetching a big container over and
    // over cannot make this (or burn-store) build a tree far larger than the file.
    let mut copied: u64 = 0;
    let budget = input.end.saturating_mul(16).saturating_add(1 << 20);
    loop {
        if copied > budget {
            return Err(format!(
                "{} copies the same containers over and over (more than {budget} values), which no checkpoint does: {}",
                input.what,
                truncated_hint()
            ));
        }
        let at = input.position;
        let op = input.byte()?;
        match op {
            0x80 => {
                let version = input.byte()?;
                if version > 5 {
                    return Err(format!(
                        "{} uses pickle protocol {version}, which does not exist",
                        input.what
                    ));
                }
            }
            b'c' => {
                let module = input.line()?;
                let name = input.line()?;
                stack.push(Value::Global(format!("{module}.{name}")));
            }
            b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'q' => input.byte()? as u32,
                    b'r' => u32::from_le_bytes(input.array()?),
                    _ => memo.len() as u32,
                };
                let value = stack.last().ok_or_else(|| underflow(input))?;
                copied = copied.saturating_add(value.size());
                memo.insert(index, value.clone());
            }
            b'h' | b'j' => {
                let index = if op == b'h' {
                    input.byte()? as u32
                } else {
                    u32::from_le_bytes(input.array()?)
                };
                let value = memo.get(&index).ok_or_else(|| {
                    format!(
                        "{} refers to memo entry {index} that was never stored: {}",
                        input.what,
                        truncated_hint()
                    )
                })?;
                copied = copied.saturating_add(value.size());
                stack.push(value.clone());
            }
            b')' => stack.push(Value::Tuple(Seq::default())),
            b']' => stack.push(Value::List(Seq::default())),
            b'}' => stack.push(Value::Dict(Map::default())),
            b'(' => stack.push(Value::Mark),
            b'X' => {
                let n = u32::from_le_bytes(input.array()?) as u64;
                stack.push(Value::Str(input.string(n)?));
            }
            b'U' => {
                let n = input.byte()? as u64;
                stack.push(Value::Str(input.string(n)?));
            }
            b'J' => stack.push(Value::Int(i32::from_le_bytes(input.array()?) as i64)),
            b'K' => stack.push(Value::Int(input.byte()? as i64)),
            b'M' => stack.push(Value::Int(u16::from_le_bytes(input.array()?) as i64)),
            b'I' => {
                let text = input.line()?;
                let value = text
                    .parse::<i64>()
                    .map_err(|_| format!("{} has a bad INT {text:?} at byte {at}", input.what))?;
                stack.push(Value::Int(value));
            }
            0x8a => {
                let n = input.byte()? as u64;
                let bytes = input.bytes(n)?;
                stack.push(long1(&bytes));
            }
            b'G' => {
                input.array::<8>()?;
                stack.push(Value::Float);
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b't' | b'l' => {
                let items = pop_to_mark(&mut stack, input)?;
                let items = seq(items)?;
                stack.push(if op == b't' { Value::Tuple(items) } else { Value::List(items) });
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(underflow(input));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(seq(items)?));
            }
            b'a' | b'e' => {
                let items = if op == b'a' { vec![pop!()] } else { pop_to_mark(&mut stack, input)? };
                match stack.last_mut() {
                    Some(Value::List(list)) => list.extend(items)?,
                    _ => {
                        return Err(format!(
                            "{} appends to something that is not a list at byte {at}",
                            input.what
                        ))
                    }
                }
            }
            b's' => {
                let value = pop!();
                let key = pop!();
                let Value::Str(key) = key else {
                    return Err(format!(
                        "{} has a dict key that is {}, not a string (at byte {at}); the reader supports string keys only",
                        input.what,
                        key.describe()
                    ));
                };
                match stack.last_mut() {
                    Some(Value::Dict(map)) => map.insert(key, value)?,
                    _ => {
                        return Err(format!(
                            "{} sets an item on something that is not a dict at byte {at}",
                            input.what
                        ));
                    }
                }
            }
            b'u' | b'd' => {
                let items = pop_to_mark(&mut stack, input)?;
                if items.len() % 2 != 0 {
                    return Err(format!(
                        "{} has a dict with an odd number of items at byte {at}",
                        input.what
                    ));
                }
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(key), Some(value)) = (items.next(), items.next()) {
                    let key = match key {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(),
                        other => {
                            return Err(format!(
                                "{} has a dict key that is {} at byte {at}; the reader supports string and int keys",
                                input.what,
                                other.describe()
                            ));
                        }
                    };
                    pairs.push((key, value));
                }
                if op == b'd' {
                    let mut map = Map::default();
                    for (key, value) in pairs {
                        map.insert(key, value)?;
                    }
                    stack.push(Value::Dict(map));
                } else {
                    match stack.last_mut() {
                        Some(Value::Dict(map)) => {
                            for (key, value) in pairs {
                                map.insert(key, value)?;
                            }
                        }
                        _ => {
                            return Err(format!(
                                "{} sets items on something that is not a dict at byte {at}",
                                input.what
                            ));
                        }
                    }
                }
            }
            b'Q' => {
                let id = pop!();
                stack.push(Value::Storage(Rc::new(storage_from_id(id)?)));
            }
            b'R' => {
                let args = pop!();
                let callable = pop!();
                let Value::Global(name) = callable else {
                    return Err(format!(
                        "{} calls {}, which is not a function (at byte {at})",
                        input.what,
                        callable.describe()
                    ));
                };
                if !allowed(&name) {
                    return Err(refused(&name));
                }
                stack.push(call(&name, args)?);
            }
            0x81 => {
                let _args = pop!();
                let class = pop!();
                let name = match class {
                    Value::Global(name) => name,
                    other => other.describe(),
                };
                return Err(refused(&name));
            }
            b'b' => {
                let state = pop!();
                let object = pop!();
                stack.push(match (object, state) {
                    (Value::Dict(mut map), Value::Dict(update)) => {
                        for (key, value) in update.items {
                            map.insert(key, value)?;
                        }
                        Value::Dict(map)
                    }
                    (object @ Value::Dict(_), _) => object,
                    _ => Value::Opaque,
                });
            }
            b'.' => return stack.pop().ok_or_else(|| underflow(input)),
            0x8c | 0x8d | 0x8e | 0x93 | 0x95 => {
                return Err(format!(
                    "{} uses pickle protocol 4 or later (opcode 0x{op:02x} at byte {at}), which the reader does not \
                     support: save it with torch.save's default protocol (no `pickle_protocol` argument)",
                    input.what
                ));
            }
            _ => {
                return Err(format!(
                    "{} has pickle opcode 0x{op:02x} at byte {at}, which the reader does not support: {}",
                    input.what,
                    truncated_hint()
                ));
            }
        }
    }
}

fn long1(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt;
    }
    let mut value: i64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        value |= (b as i64) << (8 * i);
    }
    if let Some(&last) = bytes.last() {
        if bytes.len() < 8 && last & 0x80 != 0 {
            value -= 1i64 << (8 * bytes.len());
        }
    }
    Value::Int(value)
}

fn pop_to_mark<R>(stack: &mut Vec<Value>, input: &Input<R>) -> Result<Vec<Value>, String> {
    let mark = stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or_else(|| {
        format!(
            "{} is malformed (no MARK before byte {}): {}",
            input.what,
            input.position,
            truncated_hint()
        )
    })?;
    let items = stack.split_off(mark + 1);
    stack.pop();
    Ok(items)
}
