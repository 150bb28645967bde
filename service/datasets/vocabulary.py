"""From bangumi.tv's free-form user tags (mostly Chinese, some Japanese/English) to MAL-style facets.

Users filter on `genres`, `themes` and `studios`, so these carry a small fixed English vocabulary rather than
the ~15,000 raw tag spellings. The tables were chosen from the tag frequencies of bgmd@0.0.64 (the top ~2,000
tags plus every studio-looking tag seen at least three times); each canonical value lists the spellings that
mean it. A tag may feed several facets (悬疑 is both Mystery and Suspense; 机战 is Sci-Fi and Mecha).

Deliberately unmapped: opinions (神作, 补番, 党争), formats (泡面番, 剧场版 — `type` has those), people
(voice actors, directors), franchises whose genre varies, and tags whose meaning is split in practice
(腐/基 mark both real BL and mere fan-service; 女性向 is an audience, not a genre).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping


def _words(spellings: str) -> tuple[str, ...]:
    # bangumi.tv strips spaces from tags, so a space-separated string lists them without one per line.
    return tuple(spellings.split())


GENRE_TAGS: Mapping[str, tuple[str, ...]] = {
    "Action": _words("战斗 热血 热血系 动作 打斗 燃 枪战 格斗 武侠 忍者 战斗系 爽片 机战"),
    "Adventure": _words("冒险 公路片 公路 旅行"),
    "Avant Garde": _words("意识流 实验动画 抽象"),
    "Boys Love": _words("耽美 耽美系 BL"),
    "Comedy": _words("搞笑 喜剧 欢乐 爆笑 吐槽 恶搞 kuso 沙雕 无厘头 恋爱喜剧 家庭喜剧"),
    "Drama": _words("剧情 催泪 致郁 悲剧 虐 虐心 感动 泪腺崩坏 亲情 人性 人生 胃疼 社会问题"),
    "Ecchi": _words("卖肉 肉 肉番 肉片 福利 工口 杀必死 露点 黄段子 无下限 下限 巨乳 小裤裤 绅士"),
    "Fantasy": _words(
        "奇幻 魔幻 幻想 玄幻 魔法 异世界 魔女 童话 神话 剑与魔法"
        " 魔法少女 邪道魔法少女 光之美少女 プリキュア precure 美少女战士"
    ),
    "Girls Love": _words("百合 GL"),
    "Gourmet": _words("美食 料理 美食番"),
    "Hentai": _words("里番 Hentai"),
    "Horror": _words("恐怖 怪谈 丧尸 僵尸 克苏鲁神话"),
    "Mystery": _words("推理 悬疑 侦探 名侦探柯南 柯南 名探侦コナン"),
    # Harem and otome titles are romances nearly without exception (MAL files them under Romance too).
    "Romance": _words("恋爱 爱情 纯爱 三角恋 恋爱喜剧 狗粮 虐狗 后宫 逆后宫 男后宫 乙女向 乙女"),
    "Sci-Fi": _words(
        "科幻 SF 硬科幻 机战 萝卜 机甲 机器人 太空歌剧 赛博朋克 外星人 平行世界 反乌托邦"
        " 高达 GUNDAM 机动戦士ガンダム 超时空要塞 Macross 超级机器人大战"
    ),
    "Slice of Life": _words("日常 日常系 生活 空气系 治愈 治愈系 治癒系"),
    "Sports": _words(
        "运动 竞技 体育 运动番 体育番 运动系 棒球 野球 足球 篮球 排球 网球 羽毛球 拳击 赛车 自行车"
    ),
    "Supernatural": _words("超自然系 妖怪 灵异 鬼怪 怪异 恶魔 吸血鬼 幽灵 怪谈"),
    "Suspense": _words("悬疑 惊悚 犯罪 谍战 大逃杀"),
}

THEME_TAGS: Mapping[str, tuple[str, ...]] = {
    "Anthropomorphic": _words("拟人 国拟人 兽娘"),
    "Coming of Age": _words("青春 成长 励志"),
    "Combat Sports": _words("拳击"),
    "Crossdressing": _words("伪娘 女装"),
    "Cyberpunk": _words("赛博朋克"),
    "Detective": _words("侦探 名侦探柯南 柯南 名探侦コナン 警察"),
    "Educational": _words("科普"),
    "Gender Bender": _words("性转"),
    "Gore": _words("猎奇 血腥 重口"),
    "Harem": _words("后宫"),
    "High Stakes Game": _words("赌博"),
    "Historical": _words("历史 战国 时代剧 三国 新选组 幕末 二战"),
    "Idols": _words("偶像 偶像大师 IM@S iDOLM@STER LoveLive 偶像活动"),
    "Isekai": _words("异世界 穿越 逆穿越"),
    "Iyashikei": _words("治愈 治愈系 治癒系 治愈系神作 温馨"),
    "Kids": _words("子供向 幼女向 儿童向"),
    "Love Polygon": _words("三角恋"),
    "Magical Girls": _words("魔法少女 邪道魔法少女 光之美少女 プリキュア precure 美少女战士"),
    "Martial Arts": _words("格斗 武侠 忍者"),
    "Mecha": _words("机战 萝卜 机甲 高达 GUNDAM 机动戦士ガンダム 超时空要塞 Macross 超级机器人大战"),
    "Military": _words("战争 军事 空战 战车 反战 二战"),
    "Music": _words("音乐 乐队 偶像"),
    "Mythology": _words("神话 克苏鲁神话"),
    "Organized Crime": _words("黑帮 黑道"),
    "Otaku Culture": _words("宅 Otaku"),
    "Parody": _words("恶搞"),
    "Post-Apocalyptic": _words("末世 末日 废土"),
    "Psychological": _words("心理 智斗"),
    "Racing": _words("赛车"),
    "Reincarnation": _words("转生 重生"),
    "Reverse Harem": _words("逆后宫 男后宫"),
    # 轻百合 ("light yuri") is the usual tag of cute-girls shows with only a hint of romance; counting it as
    # Girls Love would bury the real yuri titles under it.
    "Romantic Subtext": _words("轻百合 轻百"),
    "Samurai": _words("武士 武士道 新选组"),
    "School": _words("校园 学生会 社团 JK"),
    "Space": _words("宇宙 太空歌剧"),
    "Steampunk": _words("蒸汽朋克"),
    "Strategy Game": _words("麻将 卡牌"),
    "Super Power": _words("超能力 异能"),
    "Survival": _words("大逃杀 生存 生存游戏"),
    "Team Sports": _words("棒球 野球 足球 篮球 排球"),
    # On bangumi.tv 轮回 marks time-loop stories (Steins;Gate, Erased, Re:Zero), not religious rebirth.
    "Time Travel": _words("轮回 时间旅行 时间循环"),
    "Vampire": _words("吸血鬼"),
    "Video Game": _words("网游"),
    "Villainess": _words("恶役 恶役大小姐"),
    "Workplace": _words("职场 业界"),
}

# Ordered by precedence: when a title carries several, the more specific origin wins (a light novel that
# also got a manga is a light-novel adaptation), and 原创 loses to any adaptation tag.
SOURCE_TAGS: Mapping[str, tuple[str, ...]] = {
    "Light Novel": _words("轻小说改 轻改 轻小说"),
    "Web Novel": _words("网文改"),
    "Visual Novel": _words("GAL改 galgame GAL"),
    "Novel": _words("小说改 小说改编 小说"),
    "Game": _words("游戏改 游戏改编 游改 手游改 游戏动画化"),
    "4-koma Manga": _words("四格"),
    "Manga": _words("漫画改 漫改 漫画改编 漫画"),
    "Music": _words("音乐改"),
    "Original": _words("原创 原创动画"),
}

STUDIO_TAGS: Mapping[str, tuple[str, ...]] = {
    "8bit": ("8bit", "8-Bit", "エイトビット"),
    "A-1 Pictures": ("A-1 Pictures", "A-1", "A-1_Pictures"),
    "A.P.P.P.": ("A.P.P.P.",),
    "AIC": ("AIC",),
    "Actas": ("Actas", "アクタス"),
    "Ajia-do": ("亚细亚堂", "亜细亜堂", "亜細亜堂"),
    "Arms": ("Arms",),
    "Artland": ("ArtLand",),
    "Arvo Animation": ("ARVO ANIMATION",),
    "Asahi Production": ("旭production", "旭プロダクション"),
    "Ashi Productions": ("苇PRODUCTION", "苇プロダクション"),
    "Asread": ("asread", "アスリード"),
    "AXsiZ": ("AXsiZ",),
    "Bandai Namco Pictures": ("BN Pictures",),
    "Bee Train": ("BEE TRAIN",),
    "Bibury Animation Studios": ("Bibury Animation Studios", "Bibury", "バイブリーアニメーションスタジオ"),
    "Bones": ("BONES", "骨头社", "ボンズ"),
    "Bones Film": ("BONES FILM",),
    "Brain's Base": ("Brain's Base", "Brains Base", "Brain"),
    "Bridge": ("BRIDGE",),
    "C-Station": ("C-Station",),
    "C2C": ("C2C",),
    "CloverWorks": ("CloverWorks",),
    "CoMix Wave Films": ("CoMix Wave Films", "CoMixWave"),
    "Connect": ("CONNECT",),
    "Creators in Pack": ("Creators in Pack",),
    "CygamesPictures": ("Cygames Pictures",),
    "DAX Production": ("DAX Production",),
    "David Production": ("david production", "大卫社"),
    "Diomedéa": ("Diomedéa", "ディオメディア"),
    "DLE": ("DLE",),
    "DMM.futureworks": ("DMM.futureworks",),
    "Doga Kobo": ("动画工房", "動画工房", "Doga Kobo"),
    "E&G Films": ("E&G FILMS",),
    "EMT Squared": ("EMT Squared", "EMT2", "EMTスクエアード"),
    "Encourage Films": ("Encourage Films",),
    "Felix Film": ("Felix Film",),
    "feel.": ("feel.",),
    "Fukushima Gainax": ("福岛GAINAX",),
    "Gainax": ("GAINAX",),
    "Gathering": ("GATHERING",),
    "GeekToys": ("GeekToys",),
    "Geno Studio": ("Geno Studio", "ジェノスタジオ"),
    "GoHands": ("GoHands",),
    "Gonzo": ("GONZO",),
    "Graphinica": ("Graphinica",),
    "Group TAC": ("Group TAC",),
    "Hal Film Maker": ("Hal Film Maker",),
    "Haoliners Animation League": ("绘梦", "绘梦动画"),
    "Hoods Entertainment": ("Hoods Entertainment",),
    "ILCA": ("ILCA",),
    "J.C.Staff": ("J.C.STAFF",),
    "Kamikaze Douga": ("神风动画",),
    "Kanaban Graphics": ("Kanaban Graphics",),
    "Khara": ("Khara",),
    "Kinema Citrus": ("Kinema Citrus",),
    "Kitty Films": ("Kitty Film", "Kitty Films", "キティ·フィルム"),
    "Kyoto Animation": ("京都动画", "京都アニメーション", "京阿尼", "京アニ", "KyoAni"),
    "Lapin Track": ("Lapin Track",),
    "Larx Entertainment": ("LARX ENTERTAINMENT",),
    "Lay-duce": ("Lay-duce", "レイ·デュース"),
    "Lerche": ("Lerche", "ラルケ"),
    "Liden Films": ("LIDENFILMS", "ライデンフィルム", "LINDENFILMS"),
    "Light Chaser Animation": ("追光动画",),
    "Madhouse": ("MADHouse", "マッドハウス"),
    "Maho Film": ("MAHO FILM",),
    "Manglobe": ("Manglobe",),
    "MAPPA": ("MAPPA",),
    "Millepensee": ("millepensee", "ミルパンセ"),
    "Mushi Production": ("虫Production", "虫プロダクション"),
    "NAZ": ("NAZ",),
    "Nexus": ("Nexus",),
    "Nippon Animation": ("日本アニメーション", "Nippon Animation", "日本动画公司"),
    "Nomad": ("NOMAD",),
    "Okuruto Noboru": ("Okuruto Noboru", "オクルトノボル"),
    "OLM": ("OLM", "オー·エル·エム", "OLM TEAM OTA"),
    "Orange": ("orange", "オレンジ"),
    "Ordet": ("Ordet",),
    "P.A. Works": ("P.A.WORKS",),
    "Passione": ("Passione", "パッショーネ"),
    "Pierrot": ("Studio Pierrot", "Pierrot", "ぴえろ", "小丑社"),
    "Pierrot Plus": ("PIERROT+",),
    "Pine Jam": ("PINE JAM",),
    "Platinum Vision": ("Platinum Vision",),
    "Polygon Pictures": ("Polygon Pictures",),
    "Production +h.": ("Production+h.",),
    "Production doA": ("production doA",),
    "Production I.G": ("Production I.G", "I.G"),
    "Production IMS": ("Production IMS", "IMS", "プロダクションアイムズ"),
    "Production Reed": ("Production Reed",),
    "Project No.9": ("project No.9",),
    "Qualia Animation": ("Qualia Animation",),
    "Radix": ("RADIX",),
    "Rooster Teeth": ("Rooster Teeth",),
    "Sanzigen": ("SANZIGEN", "サンジゲン"),
    "Satelight": ("Satelight", "サテライト", "卫星社"),
    "Science SARU": ("Science SARU", "サイエンスSARU"),
    "Seven": ("Seven", "セブン"),
    "Seven Arcs": ("Seven Arcs", "SEVEN·ARCS"),
    "Shaft": ("SHAFT", "シャフト"),
    "Shin-Ei Animation": ("SHIN-EI", "シンエイ动画", "シンエイ動画", "SHIN-EI动画"),
    "Shirogumi": ("白组", "白組"),
    "Shuka": ("朱夏",),
    "Signal.MD": ("SIGNAL.MD",),
    "Silver Link.": ("SILVER LINK.",),
    "Sparkly Key Animation Studio": ("玄机科技",),
    "Staple Entertainment": ("Staple Entertainment",),
    "Studio 3Hz": ("Studio 3Hz",),
    "Studio 4°C": ("Studio4℃", "Studio 4°C"),
    "Studio A-CAT": ("Studio A-CAT",),
    "Studio Bind": ("Studio Bind", "スタジオバインド"),
    "Studio Blanc.": ("Studio Blanc.",),
    "Studio Chizu": ("studio地图", "スタジオ地図"),
    "Studio Colorido": ("Studio Colorido", "Colorido", "スタジオコロリド"),
    "Studio Comet": ("Studio Comet", "スタジオコメット"),
    "Studio Deen": ("Studio DEEN", "DEEN", "スタジオディーン"),
    "Studio Fantasia": ("Studio Fantasia",),
    "Studio Flad": ("Studio Flad",),
    "Studio Gaina": ("Studio Gaina",),
    "Studio Gallop": ("Studio Gallop", "GALLOP", "ぎゃろっぷ"),
    "Studio Ghibli": ("GHIBLI", "Studio Ghibli", "吉卜力", "スタジオジブリ"),
    "Studio Gokumi": ("Studio五组", "五组"),
    "Studio Hibari": ("Studio Hibari", "スタジオ云雀", "云雀工作室"),
    "Studio Jemi": ("STUDIO JEMI",),
    "Studio Kafka": ("Studio KAFKA",),
    "Studio Kai": ("Studio KAI", "スタジオKAI"),
    "Studio Lings": ("Studio Lings", "スタジオリングス"),
    "Studio Mother": ("studio MOTHER",),
    "Studio Ponoc": ("STUDIO PONOC",),
    "Studio Puyukai": ("STUDIO PUYUKAI", "スタジオぷYUKAI"),
    "Studio Rikka": ("Studio六花", "スタジオ六花", "六花工作室"),
    "Studio VOLN": ("studio VOLN",),
    "Sunrise": ("SUNRISE", "サンライズ", "日升"),
    "Sunrise Beyond": ("SUNRISE beyond",),
    "SynergySP": ("SynergySP",),
    "Tatsunoko Production": ("龙之子", "龙之子Production", "タツノコプロ", "竜の子プロダクション"),
    "Telecom Animation Film": ("Telecom Animation Film",),
    "Tezuka Productions": ("手冢PRODUCTION", "手冢プロダクション", "手塚プロダクション"),
    "The Answer Studio": ("The Answer Studio",),
    "TMS Entertainment": (
        "TMS",
        "TMS Entertainment",
        "トムス·エンタテインメント",
        "东京movie",
        "东京ムービー",
    ),
    "TNK": ("TNK", "ティー·エヌ·ケー"),
    "Toei Animation": (
        "东映",
        "东映アニメーション",
        "东映动画",
        "东映animation",
        "東映アニメーション",
        "東映動画",
    ),
    "TOHO Animation Studio": ("TOHO animation STUDIO",),
    "Tokyo Kids": ("东京キッズ",),
    "Trigger": ("TRIGGER", "扳机社"),
    "Triangle Staff": ("Triangle Staff",),
    "Troyca": ("TROYCA",),
    "TYO Animations": ("TYO Animations", "TYO", "TYOアニメーションズ"),
    "Typhoon Graphics": ("台风Graphics", "颱风グラフィックス"),
    "ufotable": ("ufotable",),
    "W-Toon Studio": ("W-toon Studio", "ダブトゥーンスタジオ"),
    "White Fox": ("WHITE FOX",),
    "Wit Studio": ("WIT STUDIO",),
    "Xebec": ("XEBEC",),
    "Xebec Zwei": ("XEBEC zwei",),
    "Yokohama Animation Lab": ("横滨Animation LABO", "横浜アニメーションラボ"),
    "Yostar Pictures": ("Yostar Pictures",),
    "Yumeta Company": ("ゆめ太カンパニー",),
    "Zero-G": ("ZERO-G", "ゼロジー"),
    "Zexcs": ("ZEXCS",),
}

# Characters users type inconsistently between otherwise identical tags: "A-1 Pictures" = "A-1_Pictures" =
# "A1Pictures", "SEVEN·ARCS" = "SevenArcs", "Brain's Base" = "BrainsBase", "LoveLive!" = "LoveLive".
_SEPARATORS = re.compile(r"[\s.\-_·・･‧'’!！]+")


# Cached because a catalogue repeats a few thousand distinct tags across hundreds of thousands of uses.
@functools.lru_cache(maxsize=1 << 16)
def normalize_tag(tag: str) -> str:
    """The matching key of a tag: width-folded, case-folded, Latin accents and separators removed."""
    folded = unicodedata.normalize("NFKC", tag).casefold()
    if not folded.isascii():
        folded = "".join(_strip_latin_accent(ch) for ch in folded)
    return _SEPARATORS.sub("", folded)


def _strip_latin_accent(ch: str) -> str:
    # Only Latin letters lose their marks ("Diomedéa" = "Diomedea"); decomposing kana would drop dakuten.
    if ch.isascii() or not ch.isalpha():
        return ch
    base = unicodedata.normalize("NFD", ch)[0]
    return base if base.isascii() else ch


def _index(table: Mapping[str, tuple[str, ...]], *, unique: bool) -> dict[str, tuple[str, ...]]:
    index: dict[str, tuple[str, ...]] = {}
    for canonical, spellings in table.items():
        for spelling in spellings:
            key = normalize_tag(spelling)
            if not key:
                raise ValueError(f"tag spelling {spelling!r} normalizes to nothing")
            known = index.get(key, ())
            if unique and known and known != (canonical,):
                raise ValueError(f"tag {spelling!r} maps to both {known[0]!r} and {canonical!r}")
            if canonical not in known:
                index[key] = (*known, canonical)
    return index


GENRES: tuple[str, ...] = tuple(GENRE_TAGS)
THEMES: tuple[str, ...] = tuple(THEME_TAGS)
SOURCES: tuple[str, ...] = tuple(SOURCE_TAGS)
STUDIOS: tuple[str, ...] = tuple(STUDIO_TAGS)

_GENRE_INDEX = _index(GENRE_TAGS, unique=False)
_THEME_INDEX = _index(THEME_TAGS, unique=False)
_SOURCE_INDEX = _index(SOURCE_TAGS, unique=True)
_STUDIO_INDEX = _index(STUDIO_TAGS, unique=True)


def _lookup(index: Mapping[str, tuple[str, ...]], tags: Iterable[str]) -> set[str]:
    return {value for tag in tags for value in index.get(normalize_tag(tag), ())}


def genres_for(tags: Iterable[str]) -> list[str]:
    """MAL-style genres implied by `tags`, in the fixed order of `GENRES` (stable output for equal input)."""
    found = _lookup(_GENRE_INDEX, tags)
    return [genre for genre in GENRES if genre in found]


def themes_for(tags: Iterable[str]) -> list[str]:
    found = _lookup(_THEME_INDEX, tags)
    return [theme for theme in THEMES if theme in found]


def studios_for(tags: Iterable[str]) -> list[str]:
    """Studios named by `tags`, in the fixed order of `STUDIOS`: bangumi sorts tags by code point, so tag
    order says nothing about which studio led the production."""
    found = _lookup(_STUDIO_INDEX, tags)
    return [studio for studio in STUDIOS if studio in found]


def source_material(tags: Iterable[str]) -> str | None:
    """The adapted medium (Manga, Light Novel, Original, ...), the most specific one when tags disagree."""
    found = _lookup(_SOURCE_INDEX, tags)
    return next((source for source in SOURCES if source in found), None)
