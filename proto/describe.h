// A message's JSON form described once, for both directions (as watchman's map()): a `Fields<T>`
// specialisation names each field with its member, and `to_json` / `from_json<T>`
// walk that one description to write or read it. Reading is strict about types (a wrong one is a
// bad_request naming the field) and lenient about absence (a missing field keeps its default), so
// that a request is validated and a newer daemon's reply may still carry fields a client lacks.
//
// Each field may come with Rules: what a request must hold (required, a number's bounds, a string's
// size) and when it is written. Writing leaves out what reads back as its default anyway: an unset
// optional, an empty string, list or map. `Presence::always` writes it whatever it holds (readers
// in other languages index it), `Presence::if_not_default` only where it differs from its type's
// default (a flag that is mostly false, a number that is mostly 0). `v.object("name", fn)` nests
// fields the C++ type keeps flat; `v.op(name)` writes a request's op. A type with a wire form of
// its own (more than one shape) specialises Custom<T>; Fields<T>::check(value), where there is
// one, judges a read value as a whole (fields that go together).
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "warden/errors.h"
#include "warden/types.h"

namespace warden {

using json = nlohmann::json;

// Specialise with `template <class V, class Self> static void each(V& v, Self& self)` calling
// v("name", self.member) once per field, in wire order.
template <class T>
struct Fields;

template <class T>
concept Described = requires { sizeof(Fields<T>); };

// Specialise with `static json write(const T&)` and `static T read(const json&, std::string_view
// field)` for a field type whose wire form the field rules cannot say.
template <class T>
struct Custom;

template <class T>
concept HasCustom = requires { sizeof(Custom<T>); };

// An enum's wire names: its to_string() overload, and this lookup back.
template <class E>
std::optional<E> enum_from_string(std::string_view name);
template <>
inline std::optional<FindingKind> enum_from_string<FindingKind>(std::string_view name) {
  return finding_kind_from_string(name);
}
template <>
inline std::optional<Outcome> enum_from_string<Outcome>(std::string_view name) {
  return outcome_from_string(name);
}
template <>
inline std::optional<JobState> enum_from_string<JobState>(std::string_view name) {
  return job_state_from_string(name);
}
template <>
inline std::optional<PathKind> enum_from_string<PathKind>(std::string_view name) {
  return path_kind_from_string(name);
}
template <>
inline std::optional<Policy> enum_from_string<Policy>(std::string_view name) {
  return policy_from_string(name);
}
template <>
inline std::optional<Discover> enum_from_string<Discover>(std::string_view name) {
  return discover_from_string(name);
}
template <>
inline std::optional<JobEnd> enum_from_string<JobEnd>(std::string_view name) {
  return job_end_from_string(name);
}

// An enum's wire names for people ("\"ok\" or \"failed\""), where a request names one.
template <class E>
std::string_view known_values() {
  return {};
}

enum class Presence { if_set, always, if_not_default };

struct Rules {
  Presence presence = Presence::if_set;
  bool required = false;      // reading: absent is a bad_request
  std::optional<double> min;  // numbers
  std::optional<double> max;
  // Strings: where not 0, a given one must not be empty, hold no NUL and be at most this long.
  std::size_t max_bytes = 0;
};

template <Described T>
json to_json(const T& value);
// `value`: where reading starts (a field's default, or what the caller knows already).
template <Described T>
T from_json(const json& j, T value = {});

namespace describe_detail {

template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};
template <class T>
struct IsVector : std::false_type {};
template <class T>
struct IsVector<std::vector<T>> : std::true_type {};
template <class T>
struct IsMap : std::false_type {};
template <class K, class V>
struct IsMap<std::map<K, V>> : std::true_type {};

[[noreturn]] inline void bad_field(std::string_view field, std::string_view what) {
  throw Error(ErrorCode::bad_request, "field '" + std::string(field) + "' " + std::string(what));
}

// A bound as people write it: 3600, not 3600.0.
inline std::string bound_text(double d) {
  if (d == std::floor(d) && std::fabs(d) < 1e15) return std::to_string(static_cast<long long>(d));
  return json(d).dump();
}

inline void check_bounds(double d, std::string_view field, const Rules& rules) {
  if ((rules.min && d < *rules.min) || (rules.max && d > *rules.max)) {
    if (!rules.max) bad_field(field, "must be at least " + bound_text(*rules.min));
    if (!rules.min) bad_field(field, "must be at most " + bound_text(*rules.max));
    bad_field(field,
              "must be between " + bound_text(*rules.min) + " and " + bound_text(*rules.max));
  }
}

// A map's key as a JSON object's member name: a string, or an enum's wire name.
template <class K>
std::string_view map_key(const K& key) {
  if constexpr (std::is_enum_v<K>) {
    return to_string(key);
  } else {
    return key;
  }
}

template <class T>
json write(const T& value) {
  if constexpr (Described<T>) {
    return to_json(value);
  } else if constexpr (HasCustom<T>) {
    return Custom<T>::write(value);
  } else if constexpr (std::is_enum_v<T>) {
    return to_string(value);
  } else if constexpr (IsVector<T>::value) {
    json out = json::array();
    for (const auto& item : value) out.push_back(write(item));
    return out;
  } else if constexpr (IsMap<T>::value) {
    json out = json::object();
    for (const auto& [key, item] : value) out[std::string(map_key(key))] = write(item);
    return out;
  } else if constexpr (std::is_same_v<T, char>) {
    return std::string(1, value);
  } else {
    return value;
  }
}

template <class T>
void read(const json& in, std::string_view field, T& out, const Rules& rules);

inline void read_string(const json& in, std::string_view field, std::string& out,
                        const Rules& rules) {
  if (!in.is_string()) bad_field(field, "must be a string");
  const auto& s = in.get_ref<const std::string&>();
  if (rules.max_bytes != 0) {
    if (s.empty()) bad_field(field, "must not be empty");
    if (s.size() > rules.max_bytes) {
      bad_field(field, "must be at most " + std::to_string(rules.max_bytes) + " bytes");
    }
    if (s.find('\0') != std::string::npos) bad_field(field, "must not contain NUL");
  }
  out = s;
}

template <class T>
void read_integer(const json& in, std::string_view field, T& out, const Rules& rules) {
  if (!in.is_number_integer()) bad_field(field, "must be an integer");
  // Held as the widest type of its sign, so that a value beyond T is refused, not wrapped.
  if (in.is_number_unsigned()) {
    auto v = in.get<std::uint64_t>();
    check_bounds(static_cast<double>(v), field, rules);
    if (v > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) {
      bad_field(field, "must be at most " + std::to_string(std::numeric_limits<T>::max()));
    }
    out = static_cast<T>(v);
    return;
  }
  auto v = in.get<std::int64_t>();
  check_bounds(static_cast<double>(v), field, rules);
  if (v < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
      (std::is_signed_v<T> && v > static_cast<std::int64_t>(std::numeric_limits<T>::max()))) {
    bad_field(field, "must be an integer between " +
                         std::to_string(std::numeric_limits<T>::min()) + " and " +
                         std::to_string(std::numeric_limits<T>::max()));
  }
  out = static_cast<T>(v);
}

template <class E>
void read_enum(const json& in, std::string_view field, E& out) {
  auto value = in.is_string() ? enum_from_string<E>(in.get_ref<const std::string&>()) : std::nullopt;
  if (!value) {
    std::string_view known = known_values<E>();
    bad_field(field,
              known.empty() ? std::string("names no known value") : "must be " + std::string(known));
  }
  out = *value;
}

template <class M>
void read_map(const json& in, std::string_view field, M& out, const Rules& rules) {
  using Key = typename M::key_type;
  if (!in.is_object()) bad_field(field, "must be an object");
  out.clear();
  for (const auto& [name, item] : in.items()) {
    Key key{};
    if constexpr (std::is_enum_v<Key>) {
      auto known = enum_from_string<Key>(name);
      if (!known) bad_field(field, "has a member '" + name + "' that names no known value");
      key = *known;
    } else {
      key = name;
    }
    read(item, field, out[key], rules);
  }
}

template <class T>
void read(const json& in, std::string_view field, T& out, const Rules& rules) {
  if constexpr (Described<T>) {
    if (!in.is_object()) bad_field(field, "must be an object");
    out = from_json<T>(in);
  } else if constexpr (HasCustom<T>) {
    out = Custom<T>::read(in, field);
  } else if constexpr (std::is_enum_v<T>) {
    read_enum(in, field, out);
  } else if constexpr (IsVector<T>::value) {
    if (!in.is_array()) bad_field(field, "must be an array");
    out.clear();
    for (const auto& item : in) read(item, field, out.emplace_back(), rules);
  } else if constexpr (IsMap<T>::value) {
    read_map(in, field, out, rules);
  } else if constexpr (std::is_same_v<T, char>) {
    if (!in.is_string() || in.get_ref<const std::string&>().size() != 1) {
      bad_field(field, "must be one character");
    }
    out = in.get_ref<const std::string&>()[0];
  } else if constexpr (std::is_same_v<T, std::string>) {
    read_string(in, field, out, rules);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!in.is_boolean()) bad_field(field, "must be true or false");
    out = in.get<bool>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!in.is_number()) bad_field(field, "must be a number");
    double d = in.get<double>();
    if (!std::isfinite(d)) bad_field(field, "must be a finite number");
    check_bounds(d, field, rules);
    out = static_cast<T>(d);
  } else {
    static_assert(std::is_integral_v<T>, "a field of a type Fields<> cannot read");
    read_integer(in, field, out, rules);
  }
}

struct Writer {
  json& out;
  template <class T>
  void operator()(std::string_view name, const T& value, const Rules& rules = {}) {
    if constexpr (IsOptional<T>::value) {
      if (value) out[std::string(name)] = write(*value);
    } else {
      if constexpr (std::is_same_v<T, std::string> || IsVector<T>::value || IsMap<T>::value) {
        if (rules.presence == Presence::if_set && value.empty()) return;
      }
      if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) {
        if (rules.presence == Presence::if_not_default && value == T{}) return;
      }
      out[std::string(name)] = write(value);
    }
  }
  template <class Fn>
  void object(std::string_view name, Fn&& fields) {
    json inner = json::object();
    Writer writer{inner};
    fields(writer);
    out[std::string(name)] = std::move(inner);
  }
  void op(std::string_view name) { out["op"] = name; }
};

struct Reader {
  const json& in;
  template <class T>
  void operator()(std::string_view name, T& value, const Rules& rules = {}) {
    auto it = in.find(name);
    if (it == in.end() || it->is_null()) {
      if (rules.required) bad_field(name, "is required");
      return;
    }
    if constexpr (IsOptional<T>::value) {
      read(*it, name, value.emplace(), rules);
    } else {
      read(*it, name, value, rules);
    }
  }
  template <class Fn>
  void object(std::string_view name, Fn&& fields) {
    auto it = in.find(name);
    if (it == in.end() || it->is_null()) return;
    if (!it->is_object()) bad_field(name, "must be an object");
    Reader reader{*it};
    fields(reader);
  }
  void op(std::string_view) {}
};

}  // namespace describe_detail

template <Described T>
json to_json(const T& value) {
  json out = json::object();
  describe_detail::Writer writer{out};
  Fields<T>::each(writer, value);
  return out;
}

template <Described T>
T from_json(const json& j, T value) {
  if (!j.is_object()) throw Error(ErrorCode::bad_request, "expected a JSON object");
  describe_detail::Reader reader{j};
  Fields<T>::each(reader, value);
  if constexpr (requires { Fields<T>::check(value); }) Fields<T>::check(value);
  return value;
}

}  // namespace warden
