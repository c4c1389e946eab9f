// A message's JSON form described once, for both directions (as watchman's map()): a `Fields<T>`
// specialisation names each field with its member, and `to_json_described` / `from_json_described`
// walk that one description to write or read it. Reading is strict about types (a wrong one is a
// bad_request naming the field) and lenient about absence (a missing field keeps its default), so
// that a request is validated and a newer daemon's reply may still carry fields a client lacks.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
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

// Bounds a number may be given in; a request outside them is refused.
struct Bounds {
  double min = 0;
  double max = 0;
};

template <Described T>
json to_json_described(const T& value);
template <Described T>
T from_json_described(const json& j);

namespace describe_detail {

template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};
template <class T>
struct IsVector : std::false_type {};
template <class T>
struct IsVector<std::vector<T>> : std::true_type {};

[[noreturn]] inline void bad_field(std::string_view field, std::string_view what) {
  throw Error(ErrorCode::bad_request, "field '" + std::string(field) + "' " + std::string(what));
}

template <class T>
json write(const T& value) {
  if constexpr (Described<T>) {
    return to_json_described(value);
  } else if constexpr (std::is_enum_v<T>) {
    return to_string(value);
  } else if constexpr (IsVector<T>::value) {
    json out = json::array();
    for (const auto& item : value) out.push_back(write(item));
    return out;
  } else {
    return value;
  }
}

template <class T>
void read(const json& in, std::string_view field, T& out, const std::optional<Bounds>& bounds) {
  if constexpr (Described<T>) {
    if (!in.is_object()) bad_field(field, "must be an object");
    out = from_json_described<T>(in);
  } else if constexpr (std::is_enum_v<T>) {
    auto value = in.is_string() ? enum_from_string<T>(in.get_ref<const std::string&>())
                                : std::nullopt;
    if (!value) bad_field(field, "names no known value");
    out = *value;
  } else if constexpr (IsVector<T>::value) {
    if (!in.is_array()) bad_field(field, "must be an array");
    out.clear();
    for (const auto& item : in) read(item, field, out.emplace_back(), bounds);
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!in.is_string()) bad_field(field, "must be a string");
    out = in.get<std::string>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!in.is_boolean()) bad_field(field, "must be true or false");
    out = in.get<bool>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!in.is_number()) bad_field(field, "must be a number");
    double d = in.get<double>();
    if (!std::isfinite(d) || (bounds && (d < bounds->min || d > bounds->max))) {
      bad_field(field, "must be between " + json(bounds ? bounds->min : 0).dump() + " and " +
                           json(bounds ? bounds->max : 0).dump());
    }
    out = static_cast<T>(d);
  } else {
    static_assert(std::is_integral_v<T>, "a field of a type Fields<> cannot read");
    bool negative = in.is_number_integer() && !in.is_number_unsigned() && in.get<std::int64_t>() < 0;
    if (!in.is_number_integer() || (negative && std::is_unsigned_v<T>)) {
      bad_field(field, "must be an integer");
    }
    out = in.get<T>();
  }
}

struct Writer {
  json& out;
  template <class T>
  void operator()(std::string_view name, const T& value, std::optional<Bounds> = {}) {
    if constexpr (IsOptional<T>::value) {
      if (value) out[std::string(name)] = write(*value);
    } else if constexpr (std::is_same_v<T, std::string> || IsVector<T>::value) {
      // Empty strings and lists are left out: absence reads back as the same default.
      if (!value.empty()) out[std::string(name)] = write(value);
    } else {
      out[std::string(name)] = write(value);
    }
  }
};

struct Reader {
  const json& in;
  template <class T>
  void operator()(std::string_view name, T& value, std::optional<Bounds> bounds = {}) {
    auto it = in.find(name);
    if (it == in.end() || it->is_null()) return;
    if constexpr (IsOptional<T>::value) {
      read(*it, name, value.emplace(), bounds);
    } else {
      read(*it, name, value, bounds);
    }
  }
};

}  // namespace describe_detail

template <Described T>
json to_json_described(const T& value) {
  json out = json::object();
  describe_detail::Writer writer{out};
  Fields<T>::each(writer, value);
  return out;
}

template <Described T>
T from_json_described(const json& j) {
  if (!j.is_object()) throw Error(ErrorCode::bad_request, "expected a JSON object");
  T value{};
  describe_detail::Reader reader{j};
  Fields<T>::each(reader, value);
  return value;
}

}  // namespace warden
